"""Simulated rigs from TOML (phoenix_gui/data/rigs), so everything runs without a GPU.

Every value is checked (validate.py) before a Rig exists: a rig with a card listed twice, no
memory, NaN bandwidth or more cards than llama.cpp can use would give a plan that looks right
and is not.
"""

from __future__ import annotations

from pathlib import Path

from .. import validate as v
from ..resources import resource
from ..tomlcompat import tomllib
from .rig import GIB, MIB, GpuInfo, Rig, SystemInfo
from .specs import _ARCH_BY_CC, architecture_for, find_spec

ARCHITECTURES = tuple(dict.fromkeys(name for _cc, name in _ARCH_BY_CC))
_RIG_BYTES = 1 << 20


class RigFileError(v.InputError):
    """A rig file cannot be used; the message is one sentence."""


def rigs_dir() -> Path:
    return resource("rigs")


def list_rigs() -> list[Path]:
    return sorted(rigs_dir().glob("*.toml"))


def demo_rig_path() -> Path:
    return rigs_dir() / "phoenix-cluster.toml"


def load_rig(path: str | Path) -> Rig:
    path = Path(path)
    if not path.suffix and not path.exists():
        path = rigs_dir() / f"{path}.toml"
    try:
        raw = v.read_text(path, "The rig file", max_bytes=_RIG_BYTES)
    except v.InputError as e:
        raise RigFileError(str(e)) from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as e:
        raise RigFileError(f"The rig file {path.name} is not valid TOML ({e}).") from None
    try:
        return _parse(data, path)
    except v.InputError as e:
        raise RigFileError(f"The rig file {path.name}: {_lower(str(e))}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise RigFileError(f"The rig file {path.name} is incomplete or malformed ({e}).") from None


def _lower(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s


def _table(d, key: str) -> dict:
    t = d.get(key, {})
    if not isinstance(t, dict):
        raise v.InputError(f"[{key}] must be a table.")
    return t


def _cc(g: dict, name: str, spec) -> tuple[int, int]:
    if "compute_capability" in g:
        raw = g["compute_capability"]
        parts = str(raw).split(".") if isinstance(raw, (str, float, int)) and not isinstance(raw, bool) else []
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts) or not 3 <= int(parts[0]) <= 20:
            raise v.InputError(f"GPU {name!r} has compute_capability {raw!r}; write it like \"6.1\" (3.0 or newer).")
        return int(parts[0]), int(parts[1])
    if spec:
        return tuple(int(x) for x in spec.compute_capability.split("."))
    raise v.InputError(f"GPU {name!r} is not in the spec table; give compute_capability.")


def _parse(data: dict, path: Path) -> Rig:
    s = _table(data, "system")
    if "ram_gib" not in s:
        raise v.InputError("[system] needs ram_gib.")
    ram_gib = v.number(s["ram_gib"], "ram_gib", 0.125, 1 << 20)
    avail_gib = v.number(s.get("ram_available_gib", ram_gib * 0.85), "ram_available_gib", 0, ram_gib)
    physical = v.integer(s.get("physical_cores", 4), "physical_cores", 1, 4096)
    system = SystemInfo(
        ram_total_bytes=int(ram_gib * GIB), ram_available_bytes=int(avail_gib * GIB),
        physical_cores=physical, logical_cores=v.integer(s.get("logical_cores", physical), "logical_cores", 1, 8192),
        ram_bandwidth_gbs=v.number(s.get("ram_bandwidth_gbs", 30.0), "ram_bandwidth_gbs", 0.1, 100000),
        ram_bandwidth_source="rig file", cpu_name=v.text(s.get("cpu_name", ""), "cpu_name", 200),
    )
    driver = v.text(str(data.get("driver_version", "550.144")), "driver_version", 40)
    cuda = v.text(str(data.get("cuda_driver_version", "12.4")), "cuda_driver_version", 40)
    gpu_list = data.get("gpu", [])
    if not isinstance(gpu_list, list) or not all(isinstance(g, dict) for g in gpu_list):
        raise v.InputError("each GPU must be a [[gpu]] table.")
    if len(gpu_list) > v.MAX_DEVICES:
        raise v.InputError(f"it lists {len(gpu_list)} GPUs; llama.cpp uses at most {v.MAX_DEVICES}.")
    gpus = []
    for i, g in enumerate(gpu_list):
        if "name" not in g or "vram_mib" not in g:
            raise v.InputError(f"GPU {i} needs a name and vram_mib.")
        name = v.text(g["name"], f"GPU {i}'s name", 200)
        total_mib = v.number(g["vram_mib"], f"GPU {name!r}'s vram_mib", 1, 1 << 24)
        used_mib = v.number(g.get("used_mib", 0), f"GPU {name!r}'s used_mib", 0)
        if used_mib > total_mib:
            raise v.InputError(f"GPU {name!r} uses more memory ({used_mib:g} MiB) than it has ({total_mib:g} MiB).")
        total, used = int(total_mib * MIB), int(used_mib * MIB)
        spec = find_spec(name, total / GIB)
        cc = _cc(g, name, spec)
        arch = architecture_for(cc)
        if "architecture" in g:  # optional; must agree with what the compute capability says
            if g["architecture"] not in ARCHITECTURES:
                raise v.InputError(f"GPU {name!r} has architecture {g['architecture']!r}, which Phoenix does not "
                                   f"know; choose one of {', '.join(ARCHITECTURES)}.")
            if g["architecture"] != arch:
                raise v.InputError(f"GPU {name!r} says architecture {g['architecture']} but compute capability "
                                   f"{cc[0]}.{cc[1]} is {arch}.")
        if "bandwidth_gbs" in g:
            bw, src = v.number(g["bandwidth_gbs"], f"GPU {name!r}'s bandwidth_gbs", 1, 100000), "rig file"
        elif spec:
            bw, src = spec.bandwidth_gbs, "spec table"
        else:
            raise v.InputError(f"GPU {name!r} is not in the spec table; give bandwidth_gbs.")
        gpus.append(GpuInfo(
            index=i, name=name, uuid=v.text(str(g.get("uuid", f"GPU-simulated-{path.stem}-{i}")), "uuid", 100),
            pci_bus_id=v.text(str(g.get("pci_bus_id", f"00000000:{i + 1:02X}:00.0")), "pci_bus_id", 40),
            total_bytes=total, free_bytes=total - used, used_bytes=used, compute_capability=cc, architecture=arch,
            bandwidth_gbs=bw, bandwidth_source=src, bus_width_bits=spec.bus_bits if spec else 0,
            pcie_gen=v.integer(g.get("pcie_gen", 3), "pcie_gen", 1, 7),
            pcie_width=v.integer(g.get("pcie_width", 16), "pcie_width", 1, 32),
            display_attached=_flag(g.get("display", False), "display"), driver_version=driver, cuda_driver_version=cuda,
        ))
    for key in ("uuid", "pci_bus_id"):
        seen: dict[str, str] = {}
        for g in gpus:
            ident = getattr(g, key).lower()
            if ident in seen:
                raise v.InputError(f"{g.name!r} and {seen[ident]!r} have the same {key} {getattr(g, key)}; "
                                   "each card needs its own.")
            seen[ident] = g.name
    return Rig(name=v.text(str(data.get("name", path.stem)), "name", 200), gpus=gpus, system=system, simulated=True,
               description=v.text(str(data.get("description", "")), "description", 1000),
               os=v.choice(data.get("os", "linux"), "os", ("linux", "windows")),
               gpu_note="" if gpus else "This simulated rig has no NVIDIA GPU.")


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise v.InputError(f"{what} must be true or false, not {value!r}.")
    return value
