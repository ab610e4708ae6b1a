"""Simulated rigs from TOML (phoenix_gui/data/rigs), so everything runs without a GPU.

Every value is checked (validate.py) before a Rig exists: a rig with a card listed twice, no
memory, NaN bandwidth or more cards than llama.cpp can use would give a plan that looks right
and is not.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import validate as v
from ..resources import resource
from ..tomlcompat import tomllib
from .cluster import CPU_DEVICE, cluster_rig
from .rig import GIB, MIB, GpuInfo, LinkInfo, RemoteNode, Rig, SystemInfo
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
    gpus = [_gpu(g, i, path, driver, cuda) for i, g in enumerate(gpu_list)]
    for key in ("uuid", "pci_bus_id"):
        seen: dict[str, str] = {}
        for g in gpus:
            ident = getattr(g, key).lower()
            if ident in seen:
                raise v.InputError(f"{g.name!r} and {seen[ident]!r} have the same {key} {getattr(g, key)}; "
                                   "each card needs its own.")
            seen[ident] = g.name
    rig = Rig(name=v.text(str(data.get("name", path.stem)), "name", 200), gpus=gpus, system=system, simulated=True,
              description=v.text(str(data.get("description", "")), "description", 1000),
              os=v.choice(data.get("os", "linux"), "os", ("linux", "windows")),
              gpu_note="" if gpus else "This simulated rig has no NVIDIA GPU.")
    nodes = _nodes(data.get("node", []), path, driver, cuda)
    if len(gpus) + sum(len(n.devices) for n in nodes) > v.MAX_DEVICES:
        raise v.InputError(f"its GPUs and its nodes' devices add up to more than the {v.MAX_DEVICES} llama.cpp uses.")
    return cluster_rig(rig, nodes) if nodes else rig


def _nodes(raw, path: Path, driver: str, cuda: str) -> list[RemoteNode]:
    """[[node]] tables: PCs sharing devices over RPC, so a cluster can be planned without a network.
    address = "host:port", name, optional rtt_ms and throughput_mbs (the link from this PC), and
    [[node.device]] tables: name, total_mib, free_mib, like a [[gpu]] otherwise; cpu = true for a node
    that shares its CPU and RAM (then bandwidth_gbs is its RAM bandwidth)."""
    if not isinstance(raw, list) or not all(isinstance(n, dict) for n in raw):
        raise v.InputError("each node must be a [[node]] table.")
    nodes: list[RemoteNode] = []
    for i, n in enumerate(raw):
        if "address" not in n:
            raise v.InputError(f"node {i} needs an address (host:port).")
        addrs = v.rpc_targets(n["address"]) if isinstance(n["address"], str) else v.rpc_targets(None)
        if len(addrs) != 1:
            raise v.InputError(f"node {i} has {len(addrs)} addresses; give each PC its own [[node]].")
        address = addrs[0]
        if any(m.address == address for m in nodes):
            raise v.InputError(f"node {address} is listed twice.")
        name = v.text(n.get("name", address), f"node {address}'s name", 200) or address
        link = None
        if "rtt_ms" in n or "throughput_mbs" in n:
            if not ("rtt_ms" in n and "throughput_mbs" in n):
                raise v.InputError(f"node {name!r} needs both rtt_ms and throughput_mbs for its link, or neither.")
            link = LinkInfo(v.number(n["rtt_ms"], f"node {name!r}'s rtt_ms", 0, 60000),
                            v.number(n["throughput_mbs"], f"node {name!r}'s throughput_mbs", 0.01, 1e6), measured=False)
        devs = n.get("device", [])
        if not isinstance(devs, list) or not all(isinstance(d, dict) for d in devs):
            raise v.InputError(f"node {name!r}: each device must be a [[node.device]] table.")
        if not devs:
            raise v.InputError(f"node {name!r} lists no device; add a [[node.device]] with name, total_mib and free_mib.")
        devices = [replace(_node_device(d, j, address, path, driver, cuda), node=address) for j, d in enumerate(devs)]
        nodes.append(RemoteNode(address, name, devices, link))
    return nodes


def _node_device(d: dict, j: int, address: str, path: Path, driver: str, cuda: str) -> GpuInfo:
    if "name" not in d or "total_mib" not in d or "free_mib" not in d:
        raise v.InputError(f"device {j} of node {address} needs a name, total_mib and free_mib.")
    name = v.text(d["name"], f"device {j} of node {address}'s name", 200)
    total = v.number(d["total_mib"], f"{name!r}'s total_mib", 1, 1 << 24)
    free = v.number(d["free_mib"], f"{name!r}'s free_mib", 0, 1 << 24)
    if free > total:
        raise v.InputError(f"{name!r} on node {address} has more free memory ({free:g} MiB) than in total ({total:g} MiB).")
    if not _flag(d.get("cpu", False), "cpu"):
        g = {k: x for k, x in d.items() if k not in ("total_mib", "free_mib", "cpu")}
        g.update(vram_mib=total, used_mib=total - free, uuid=d.get("uuid", f"RPC-{address}-{j}"),
                 pci_bus_id=d.get("pci_bus_id", f"rpc:{address}:{j}"))
        return _gpu(g, j, path, driver, cuda)
    if "bandwidth_gbs" not in d:
        raise v.InputError(f"{name!r} on node {address} is a CPU; give its RAM bandwidth as bandwidth_gbs.")
    return GpuInfo(index=j, name=name, uuid=f"RPC-{address}-{j}", pci_bus_id=f"rpc:{address}:{j}",
                   total_bytes=int(total * MIB), free_bytes=int(free * MIB), used_bytes=int((total - free) * MIB),
                   compute_capability=(0, 0), architecture=CPU_DEVICE,
                   bandwidth_gbs=v.number(d["bandwidth_gbs"], f"{name!r}'s bandwidth_gbs", 0.1, 100000),
                   bandwidth_source="rig file")


def _gpu(g: dict, i: int, path: Path, driver: str, cuda: str) -> GpuInfo:
    """One [[gpu]] table (also a node's [[node.device]], in the same words)."""
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
    return GpuInfo(
        index=i, name=name, uuid=v.text(str(g.get("uuid", f"GPU-simulated-{path.stem}-{i}")), "uuid", 100),
        pci_bus_id=v.text(str(g.get("pci_bus_id", f"00000000:{i + 1:02X}:00.0")), "pci_bus_id", 40),
        total_bytes=total, free_bytes=total - used, used_bytes=used, compute_capability=cc, architecture=arch,
        bandwidth_gbs=bw, bandwidth_source=src, bus_width_bits=spec.bus_bits if spec else 0,
        pcie_gen=v.integer(g.get("pcie_gen", 3), "pcie_gen", 1, 7),
        pcie_width=v.integer(g.get("pcie_width", 16), "pcie_width", 1, 32),
        display_attached=_flag(g.get("display", False), "display"), driver_version=driver, cuda_driver_version=cuda,
    )


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise v.InputError(f"{what} must be true or false, not {value!r}.")
    return value
