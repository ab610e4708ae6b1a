"""A cluster: this PC plus devices other PCs share over llama.cpp's RPC backend.

The engine lists RPC devices first (in --rpc order), then its own CUDA devices, and tensor-split
positions follow that order; so a cluster rig lists them the same way and plans index it as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .rig import GpuInfo, Rig

LOCAL = "this PC"
CPU_DEVICE = "cpu"  # architecture of a node that shares its CPU and RAM (koboldcpp --rpcmode host --usecpu)


@dataclass
class LinkInfo:
    """The network path main PC -> node: round-trip time and throughput (MB/s = 10^6 bytes/s)."""

    rtt_ms: float
    throughput_mbs: float
    measured: bool = True  # False: typed into a rig file or assumed, not measured


# A link nobody measured or described: 1 Gbit Ethernet (about 940 Mbit/s of TCP payload, 0.5 ms round trip)
ASSUMED_LINK = LinkInfo(rtt_ms=0.5, throughput_mbs=112.0, measured=False)


@dataclass
class RemoteNode:
    address: str  # "host:port" exactly as --rpc / --rpctargets take it
    name: str  # the PC's own name when known, else the address
    devices: list[GpuInfo] = field(default_factory=list)  # each with node=address
    link: LinkInfo | None = None
    engine: str = ""  # the engine (and version) serving it, when known
    protocol: str = ""  # the RPC protocol version it speaks, "3.0.0"

    def to_dict(self) -> dict:
        return {"address": self.address, "name": self.name, "engine": self.engine, "protocol": self.protocol,
                "link": None if self.link is None else vars(self.link).copy(),
                "devices": [g.to_dict() for g in self.devices]}


def is_cpu_device(g: GpuInfo) -> bool:
    """A node's CPU and RAM shared as an RPC device (a `phoenix share` says "CPU", a rig file cpu = true)."""
    return g.architecture.lower() == CPU_DEVICE


def cluster_rig(local: Rig, nodes: list[RemoteNode]) -> Rig:
    """`local` with the nodes' devices in front, in --rpc order: the engine's device order."""
    remote: list[GpuInfo] = []
    for node in nodes:
        remote += [replace(g, node=node.address) for g in node.devices]
    extra = dict(local.extra)
    extra["nodes"] = list(nodes)
    base = extra.setdefault("local_name", local.name)  # a rig that is already a cluster keeps its own name
    name = base if not nodes else f"{base} + {', '.join(n.name for n in nodes)}"
    return replace(local, name=name, gpus=remote + [g for g in local.gpus if not g.is_remote], extra=extra)


def nodes_of(rig: Rig) -> list[RemoteNode]:
    return list(rig.extra.get("nodes", []))


def node_of(rig: Rig, gpu: GpuInfo) -> RemoteNode | None:
    return next((n for n in nodes_of(rig) if n.address == gpu.node), None) if gpu.is_remote else None


def machine_of(rig: Rig, gpu: GpuInfo) -> str:
    """The PC a device is in: the node's name, or "this PC"."""
    if not gpu.is_remote:
        return LOCAL
    node = node_of(rig, gpu)
    return node.name if node else gpu.node


def link_of(rig: Rig, gpu: GpuInfo) -> LinkInfo | None:
    node = node_of(rig, gpu)
    return node.link if node else None


def rpc_addresses(rig: Rig) -> list[str]:
    """The --rpc list: each node that has a device in the rig, in order."""
    return list(dict.fromkeys(g.node for g in rig.gpus if g.is_remote))
