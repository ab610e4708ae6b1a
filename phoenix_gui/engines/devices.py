"""llama.cpp's device order, as both engines see it, from a LaunchRequest.

The engine puts every device of every --rpc server first (in --rpc order, each server's devices in its
order), then its own CUDA devices; tensor-split positions, device names and buffer names follow that order.
CUDA devices are numbered as NVML does (PCI bus order) under CUDA_DEVICE_ORDER=PCI_BUS_ID.
"""

from __future__ import annotations

import re

from ..validate import split_weights
from .request import LaunchRequest


def rpc_nodes(req: LaunchRequest) -> list[str]:
    """The --rpc / --rpctargets list: the nodes the plan puts a device of, in rig (engine) order."""
    return list(dict.fromkeys(g.node for g in req.gpus if g.is_remote))


def engine_devices(req: LaunchRequest) -> list[tuple[int | None, str, str]]:
    """Every device the engine will see, in its order: (the plan's GPU position or None when the plan
    leaves it out, llama-server's device name, the buffer type name in overrides and logs). RPC devices
    are numbered across servers (RPC0, RPC1, ...); their buffers are RPC<i>[host:port], i within a server."""
    pos = {gi: i for i, gi in enumerate(req.plan_gpus)}
    out: list[tuple[int | None, str, str]] = []
    for addr in rpc_nodes(req):
        for j, gi in enumerate(k for k, g in enumerate(req.rig_gpus) if g.node == addr):
            out.append((pos.get(gi), f"RPC{len(out)}", f"RPC{j}[{addr}]"))
    local = [i for i, g in enumerate(req.gpus) if not g.is_remote]
    for k, i in enumerate(local):  # CUDA_VISIBLE_DEVICES / --device make them the engine's CUDA0, 1, ...
        out.append((i, f"CUDA{k}", f"CUDA{k}"))
    return out


def engine_split(req: LaunchRequest) -> list[float]:
    """The plan's tensor split over the engine's devices (0 for a node's device the plan does not use), in
    numbers an engine reads as meant (validate.split_weights: of a sane size, 4 decimals)."""
    if not rpc_nodes(req):
        return split_weights(list(req.tensor_split))
    return split_weights([req.tensor_split[i] if i is not None and i < len(req.tensor_split) else 0.0
                          for i, _n, _b in engine_devices(req)])


def buffer_overrides(req: LaunchRequest) -> list[tuple[str, str]]:
    """The tensor overrides with "CUDAn" (the plan's n-th GPU) as the engine's buffer type for that device;
    without another PC's device the plan's numbering is the engine's."""
    if not rpc_nodes(req):
        return list(req.overrides)
    by_pos = {i: b for i, _n, b in engine_devices(req) if i is not None}
    out = []
    for rx, buft in req.overrides:
        m = re.match(r"CUDA(\d+)$", buft)
        out.append((rx, by_pos.get(int(m.group(1)), buft) if m else buft))
    return out


def device_env(req: LaunchRequest) -> dict[str, str]:
    """Make the engine number GPUs as NVML does and see only the chosen ones, in the chosen order
    (this PC's GPUs: another PC's devices come through --rpc, not CUDA)."""
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    gpus = [g for g in req.selected if not g.is_remote]
    if gpus and [g.uuid for g in gpus] != [g.uuid for g in req.rig_gpus if not g.is_remote]:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(g.uuid if g.uuid else str(g.index) for g in gpus)
    return env


def device_names(req: LaunchRequest) -> list[str]:
    """llama-server's --device list: the plan's GPUs in plan order, this PC's as CUDAn (n in PCI bus order,
    no masking), another PC's by its RPC name (numbered across the --rpc servers, in that order)."""
    rpc_name = {i: n for i, n, _b in engine_devices(req) if i is not None and n.startswith("RPC")}
    pci_order = sorted((g for g in req.rig_gpus if not g.is_remote), key=lambda g: g.pci_bus_id.lower())
    return [rpc_name[i] if i in rpc_name else f"CUDA{pci_order.index(g)}" for i, g in enumerate(req.gpus)]


def kcpps_devices(req: LaunchRequest) -> str:
    """koboldcpp's `device` list for a .kcpps, which cannot carry CUDA_VISIBLE_DEVICES: when the plan
    uses some of this PC's GPUs or another order, name them (koboldcpp numbers CUDA devices in PCI bus
    order, as NVML does) after the other PCs' devices (RPC0, RPC1, ... across servers; the engine refuses
    the RPC0[host:port] form here). Empty: every GPU in PCI order, koboldcpp's own choice."""
    if not req.offloads or "CUDA_VISIBLE_DEVICES" not in device_env(req):
        return ""
    names = [n for _i, n, _b in engine_devices(req) if n.startswith("RPC")]
    names += [f"CUDA{g.index}" for g in req.gpus if not g.is_remote]
    return ",".join(names)
