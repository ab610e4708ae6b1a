"""Plain dataclasses for what the planner needs to know about a machine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .calibration import Calibration

MIB = 1 << 20
GIB = 1 << 30


@dataclass
class GpuInfo:
    index: int  # NVML index = CUDA index under CUDA_DEVICE_ORDER=PCI_BUS_ID
    name: str
    uuid: str
    pci_bus_id: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    compute_capability: tuple[int, int]
    architecture: str
    bandwidth_gbs: float
    bandwidth_source: str  # "spec table", "nvml" or "rig file"
    bus_width_bits: int = 0
    mem_clock_mhz: int = 0
    pcie_gen: int = 0
    pcie_width: int = 0
    display_attached: bool = False
    driver_version: str = ""
    cuda_driver_version: str = ""
    # "" for a device of this PC; "host:port" of the RPC server that shares it from another PC (llama.cpp's
    # RPC backend). A rig lists devices in the engine's order: RPC devices first, then this PC's CUDA ones.
    node: str = ""

    @property
    def is_remote(self) -> bool:
        return bool(self.node)

    @property
    def short_name(self) -> str:
        return self.name.replace("NVIDIA ", "").replace("GeForce ", "")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["compute_capability"] = "%d.%d" % self.compute_capability
        return d


@dataclass
class SystemInfo:
    ram_total_bytes: int
    ram_available_bytes: int
    physical_cores: int
    logical_cores: int
    ram_bandwidth_gbs: float
    ram_bandwidth_source: str  # "measured", "rig file", "table"
    cpu_name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LinkInfo:
    """The network path main PC -> node: round-trip time and throughput (MB/s = 10^6 bytes/s)."""

    rtt_ms: float
    throughput_mbs: float
    measured: bool = True  # False: typed into a rig file or assumed, not measured


@dataclass
class RemoteNode:
    address: str  # "host:port" exactly as --rpc / --rpctargets take it
    name: str  # the PC's own name when known, else the address
    devices: list[GpuInfo] = field(default_factory=list)  # each with node=address
    link: LinkInfo | None = None
    engine: str = ""  # the engine (and version) serving it, when known
    protocol: str = ""  # the RPC protocol version it speaks, "3.0.0"
    peer: str = ""  # the IPv4 address:port its RPC connection reached (two names for one PC have one peer)

    @property
    def label(self) -> str:
        """How a message names the PC: the address typed, and the name it gave, quoted (another PC chose it)."""
        return self.address if self.name in ("", self.address) else f'"{self.name}" ({self.address})'

    def to_dict(self) -> dict:
        return {"address": self.address, "name": self.name, "engine": self.engine, "protocol": self.protocol,
                "link": None if self.link is None else vars(self.link).copy(),
                "devices": [g.to_dict() for g in self.devices]}


@dataclass
class Rig:
    name: str
    gpus: list[GpuInfo]
    system: SystemInfo
    simulated: bool = False
    gpu_note: str = ""  # why there are no GPUs, when there are none
    description: str = ""
    os: str = "linux"  # "linux" or "windows": runtime overheads differ
    # a cluster (hardware/cluster.py cluster_rig): the other PCs whose devices lead `gpus`, in --rpc order,
    # and this PC's own name ("" for a rig of one PC: its name is `name`)
    nodes: list[RemoteNode] = field(default_factory=list)
    local_name: str = ""
    # what a tune measured on this PC (planner/calibration.py applies it to every plan); None: not tuned
    calibration: Calibration | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "simulated": self.simulated, "os": self.os, "gpu_note": self.gpu_note,
                "description": self.description, "gpus": [g.to_dict() for g in self.gpus],
                "system": self.system.to_dict()}
