"""Plain dataclasses for what the planner needs to know about a machine."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
class Rig:
    name: str
    gpus: list[GpuInfo]
    system: SystemInfo
    simulated: bool = False
    gpu_note: str = ""  # why there are no GPUs, when there are none
    description: str = ""
    os: str = "linux"  # "linux" or "windows": runtime overheads differ
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "simulated": self.simulated, "os": self.os, "gpu_note": self.gpu_note,
                "description": self.description, "gpus": [g.to_dict() for g in self.gpus],
                "system": self.system.to_dict()}
