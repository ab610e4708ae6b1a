"""A cluster: this PC plus devices other PCs share over llama.cpp's RPC backend.

The engine lists RPC devices first (in --rpc order), then its own CUDA devices, and tensor-split
positions follow that order; so a cluster rig lists them the same way and plans index it as usual.
"""

from __future__ import annotations

from dataclasses import replace

from ..validate import MAX_DEVICES, InputError
from .rig import GpuInfo, LinkInfo, RemoteNode, Rig

LOCAL = "this PC"
CPU_DEVICE = "cpu"  # architecture of a node that shares its CPU and RAM (koboldcpp --rpcmode host --usecpu)


# A link nobody measured or described: 1 Gbit Ethernet (about 940 Mbit/s of TCP payload, 0.5 ms round trip)
ASSUMED_LINK = LinkInfo(rtt_ms=0.5, throughput_mbs=112.0, measured=False)


def is_cpu_device(g: GpuInfo) -> bool:
    """A node's CPU and RAM shared as an RPC device (a `phoenix share` says "CPU", a rig file cpu = true)."""
    return g.architecture.lower() == CPU_DEVICE


class ClusterError(InputError):
    """These PCs cannot be planned together; one sentence."""


def check_cluster(local_gpus: list[GpuInfo], nodes: list[RemoteNode]) -> None:
    """Raise ClusterError when a PC is listed twice (two names, one address; or one GPU, by its UUID, in
    two nodes): its memory would count twice. Also when a node shares one of this PC's own GPUs (it would
    be planned, and calibrated, as two devices), or when there are more devices than llama.cpp uses."""
    first: dict[str, RemoteNode] = {}
    for n in nodes:
        key = n.peer or n.address
        if key in first:
            raise ClusterError(f"{n.address} and {first[key].address} are the same PC ({key}); list it once, or "
                               "its memory would count twice.")
        first[key] = n
    owner: dict[str, str] = {g.uuid.lower(): LOCAL for g in local_gpus if g.uuid}
    for n in nodes:
        for g in n.devices:
            was = owner.get(g.uuid.lower())
            if was == LOCAL:
                raise ClusterError(f"{n.label} shares {g.name} ({g.uuid}), which is a GPU of this PC: plan it as "
                                   "this PC's GPU, not over the network.")
            if was is not None:
                raise ClusterError(f"{n.label} and {was} share the same GPU ({g.uuid}): they are one PC listed "
                                   "twice; list it once.")
            owner[g.uuid.lower()] = n.label
    total = len(local_gpus) + sum(len(n.devices) for n in nodes)
    if total > MAX_DEVICES:
        raise ClusterError(f"This PC's GPUs and the other PCs' devices add up to {total}; llama.cpp uses at most "
                           f"{MAX_DEVICES}.")


def cluster_rig(local: Rig, nodes: list[RemoteNode]) -> Rig:
    """`local` with the nodes' devices in front, in --rpc order: the engine's device order."""
    remote: list[GpuInfo] = []
    for node in nodes:
        remote += [replace(g, node=node.address) for g in node.devices]
    base = local.local_name or local.name  # a rig that is already a cluster keeps its own name
    name = base if not nodes else f"{base} + {', '.join(n.name for n in nodes)}"
    return replace(local, name=name, gpus=remote + [g for g in local.gpus if not g.is_remote], nodes=list(nodes),
                   local_name=base)


def nodes_of(rig: Rig) -> list[RemoteNode]:
    return list(rig.nodes)


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
