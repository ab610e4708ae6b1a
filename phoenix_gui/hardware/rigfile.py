"""Simulated rigs from TOML (phoenix_gui/data/rigs), so everything runs without a GPU."""

from __future__ import annotations

from pathlib import Path

from ..resources import resource
from ..tomlcompat import tomllib
from .rig import GIB, MIB, GpuInfo, Rig, SystemInfo
from .specs import architecture_for, find_spec


class RigFileError(ValueError):
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
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RigFileError(f"The rig file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RigFileError(f"The rig file {path} cannot be read ({e}).") from None
    except tomllib.TOMLDecodeError as e:
        raise RigFileError(f"The rig file {path.name} is not valid TOML ({e}).") from None
    try:
        return _parse(data, path)
    except (KeyError, TypeError, ValueError) as e:
        raise RigFileError(f"The rig file {path.name} is incomplete or malformed ({e}).") from None


def _parse(data: dict, path: Path) -> Rig:
    s = data.get("system", {})
    ram = int(float(s["ram_gib"]) * GIB)
    system = SystemInfo(
        ram_total_bytes=ram, ram_available_bytes=int(float(s.get("ram_available_gib", s["ram_gib"] * 0.85)) * GIB),
        physical_cores=int(s.get("physical_cores", 4)), logical_cores=int(s.get("logical_cores", s.get("physical_cores", 4))),
        ram_bandwidth_gbs=float(s.get("ram_bandwidth_gbs", 30.0)), ram_bandwidth_source="rig file",
        cpu_name=str(s.get("cpu_name", "")),
    )
    gpus = []
    driver = str(data.get("driver_version", "550.144"))
    cuda = str(data.get("cuda_driver_version", "12.4"))
    for i, g in enumerate(data.get("gpu", [])):
        name = str(g["name"])
        total = int(float(g["vram_mib"]) * MIB)
        used = int(float(g.get("used_mib", 0)) * MIB)
        spec = find_spec(name, total / GIB)
        if "compute_capability" in g:
            cc = tuple(int(x) for x in str(g["compute_capability"]).split("."))
        elif spec:
            cc = tuple(int(x) for x in spec.compute_capability.split("."))
        else:
            raise ValueError(f"GPU {name!r} is not in the spec table; give compute_capability")
        if "bandwidth_gbs" in g:
            bw, src = float(g["bandwidth_gbs"]), "rig file"
        elif spec:
            bw, src = spec.bandwidth_gbs, "spec table"
        else:
            raise ValueError(f"GPU {name!r} is not in the spec table; give bandwidth_gbs")
        if used > total:
            raise ValueError(f"GPU {name!r} uses more memory than it has")
        gpus.append(GpuInfo(
            index=i, name=name, uuid=str(g.get("uuid", f"GPU-simulated-{path.stem}-{i}")),
            pci_bus_id=str(g.get("pci_bus_id", f"00000000:{i + 1:02X}:00.0")), total_bytes=total,
            free_bytes=total - used, used_bytes=used, compute_capability=cc, architecture=architecture_for(cc),
            bandwidth_gbs=bw, bandwidth_source=src, bus_width_bits=spec.bus_bits if spec else 0,
            pcie_gen=int(g.get("pcie_gen", 3)), pcie_width=int(g.get("pcie_width", 16)),
            display_attached=bool(g.get("display", False)), driver_version=driver, cuda_driver_version=cuda,
        ))
    return Rig(name=str(data.get("name", path.stem)), gpus=gpus, system=system, simulated=True,
               description=str(data.get("description", "")), os=str(data.get("os", "linux")),
               gpu_note="" if gpus else "This simulated rig has no NVIDIA GPU.")
