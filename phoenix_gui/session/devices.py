"""Which device is which, across rigs: per-device state (ticks, split shares, locks) is kept by a device's
stable id, so it follows the card when the rig's list is reordered or other PCs come and go."""

from __future__ import annotations

from dataclasses import replace

from ..hardware.cluster import nodes_of
from ..hardware.rig import RemoteNode, Rig
from ..planner import Plan


def device_id(g) -> tuple:
    """A device's identity: its PC and its NVML uuid where known, else its NVML index on that PC."""
    return (g.node, "uuid", g.uuid.lower()) if g.uuid else (g.node, "index", g.index)


def device_ids(rig: Rig) -> list[tuple]:
    """Every device's id, in the rig's order (position = rig index)."""
    return [device_id(g) for g in rig.gpus]


def measured_key(plan: Plan, rig: Rig) -> tuple:
    """What makes two plans the same run for the engine: the model, where each layer goes (by device identity),
    and the settings that change the speed; not the margin, host or port."""
    s = plan.settings
    where = tuple((None if d.gpu_index is None else device_id(rig.gpus[d.gpu_index]), d.first_layer, d.layers)
                  for d in plan.devices if d.layers)
    return (plan.model_name, where, plan.context, s.cache_type_k, s.cache_type_v, s.flash_attn, s.batch, s.threads,
            s.moecpu, tuple(s.overrides), s.split_mode, s.lowvram, s.backend, s.parallel)


def split_rig(rig: Rig) -> tuple[Rig, list[RemoteNode]]:
    """(the rig without its RPC devices, the nodes it lists): a rig file may describe a whole cluster."""
    nodes = nodes_of(rig)
    if not nodes and not any(g.is_remote for g in rig.gpus):
        return rig, []
    suffix = f" + {', '.join(n.name for n in nodes)}"
    name = rig.name[: -len(suffix)] if nodes and rig.name.endswith(suffix) else rig.name
    return replace(rig, name=name, gpus=[g for g in rig.gpus if not g.is_remote], nodes=[]), nodes


def spread(n: int, weights: list[float]) -> list[int]:
    """n whole layers over cards in proportion to weights (equal when all are 0), largest remainders first."""
    if not weights:
        return []
    w = weights if sum(weights) > 0 else [1] * len(weights)
    raw = [n * x / sum(w) for x in w]
    out = [int(r) for r in raw]
    for k in sorted(range(len(out)), key=lambda k: -(raw[k] - out[k]))[: n - sum(out)]:
        out[k] += 1
    return out
