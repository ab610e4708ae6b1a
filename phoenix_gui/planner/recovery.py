"""After an out-of-memory: what the failure teaches about that GPU, and the fastest plan that fits with it.

A failed allocation of R MiB on a GPU, at a point where the plan had already placed C MiB there (CUDA
context, then weights, KV and compute in the engine's order), shows that the card held less than C + R:
its free memory is capped just below that. If R is more than the plan predicted for that buffer, the
engine needs more per layer on that card than the model says: the difference per layer is added to every
later plan for it. A failure whose log gives no size shows less: the card held less than the whole plan
for it plus whatever the engine needs beyond the plan there. That cap is kept apart (Budget.plan_cap_bytes)
and, once a tune has measured the card's excess (the calibration's mem_extra_mib, on the rig the budgets
are checked against), raised by it: an out-of-memory the measured excess explains does not also lower the
card's budget, or the excess would count twice (bench_tune: the true best ruled out on such rigs). Auto-fit then re-runs with the corrected budget; a plan is only returned when the
planner's own ledger, corrected, says every device fits.

Corrections are plain numbers per GPU UUID (`Budgets`), so a retry of a retry, and the tuner, keep what
earlier failures taught.

The safety margin (PlanSettings.margin_mib) is a guess made before anything was measured. Once a tune has
compared the engine's logged buffers with the plan, the per-card excess goes into the calibration and
measured_margin keeps only a margin for noise and drift.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import math

from ..hardware.rig import MIB, Rig
from ..model.info import ModelInfo
from .autofit import _Evaluator, _fill, auto_fit  # the same fill auto-fit uses
from .budgets import Budget, Budgets
from ..hardware.calibration import Calibration
from .calibration import extra_bytes
from .ledger import DevicePlan, Plan
from .plan import make_plan
from .settings import PlanSettings

PROBE_MARGIN_MIB = 0.0  # while tuning: a load that fails costs seconds and teaches the true budget
MARGIN_FLOOR_MIB = 64.0  # kept free even when the plan was never short: allocator rounding, a driver update


def measured_margin(cal: Calibration | None, spread_mib: float = 0.0) -> tuple[float, float] | None:
    """(margin in MiB, the largest excess the calibration adds to a card). One margin model: the
    calibration's per-card correction (mem_extra_mib) carries what the engine was measured to need beyond
    the plan, added once to every later plan on that card; the margin covers only what one tune cannot
    see: the noise between loads (spread_mib, how much a card's excess varied over the runs) and drift
    (fragmentation, other programs, a driver update), at least MARGIN_FLOOR_MIB. Counting the excess in
    the margin as well would keep it free twice and leave layers off that the runs proved fit.
    None when no GPU buffer was logged (nothing to size it from)."""
    if cal is None or not cal.mem_extra_mib:
        return None
    excess = max(0.0, max(cal.mem_extra_mib.values()))
    return float(math.ceil(max(MARGIN_FLOOR_MIB, spread_mib))), excess


@dataclass
class Recovery:
    settings: PlanSettings | None  # None: no plan fits
    reason: str  # one sentence: what was learned, or why nothing fits
    budgets: Budgets


def learn(rig: Rig, plan: Plan, device: int | None, requested_mib: float | None, budgets: Budgets) -> tuple[int, Budgets]:
    """Fold one out-of-memory on engine device `device` (an index into plan.gpus; None: unknown, the
    tightest card is blamed) into the budgets. Returns (index into plan.gpus, new budgets)."""
    gpus = plan.gpus
    if device is None or not 0 <= device < len(gpus):
        device = min(range(len(gpus)), key=lambda i: gpus[i].headroom_bytes - _extra(rig, gpus[i], budgets))
    d = gpus[device]
    uuid = rig.gpus[d.gpu_index].uuid
    old = budgets.get(uuid)
    before, predicted = _placed_before(d, requested_mib)
    new = Budgets(dict(budgets.by_uuid))
    if requested_mib is None:  # no size in the log: the card held less than the whole plan plus the excess
        # the bare plan's bytes: a calibration's excess on the plan's rig is added back where caps are checked
        bare = d.total_bytes - extra_bytes(rig, rig.gpus[d.gpu_index]) + _extra(rig, d, budgets) - MIB
        if old.plan_cap_bytes is not None:
            bare = min(bare, old.plan_cap_bytes)
        new.by_uuid[uuid] = replace(old, plan_cap_bytes=bare)
        return device, new
    req = int(requested_mib * MIB)
    cap = before + req - MIB
    under = max(0, req - predicted)
    extra = max(old.extra_per_layer_bytes, under // max(1, d.layers))
    cap = min(cap, d.free_bytes, old.free_cap_bytes if old.free_cap_bytes is not None else cap)
    new.by_uuid[uuid] = Budget(cap, extra, old.plan_cap_bytes)
    return device, new


def _placed_before(d: DevicePlan, requested_mib: float | None) -> tuple[int, int]:
    """(bytes the plan had placed on the card before the failed buffer, the plan's size of that buffer).
    The buffer is the one the failed size is closest to; the engine allocates context, weights, KV,
    compute in that order."""
    parts = [d.weights_bytes, d.kv_bytes, d.compute_bytes]
    if requested_mib is None:
        return d.overhead_bytes, 0
    req = requested_mib * MIB
    k = min(range(3), key=lambda i: abs(parts[i] - req))
    return d.overhead_bytes + sum(parts[:k]), parts[k]


def _extra(rig: Rig, d: DevicePlan, budgets: Budgets) -> int:
    return budgets.get(rig.gpus[d.gpu_index].uuid).extra_per_layer_bytes * d.layers


def corrected_rig(rig: Rig, budgets: Budgets, layers: dict[str, int] | None = None) -> Rig:
    """The rig with every GPU's free memory lowered to what the failures showed, less the extra the
    engine needs for `layers` layers there (a conservative guess for auto-fit; fits() checks exactly)."""
    layers = layers or {}
    gpus = []
    for g in rig.gpus:
        b = budgets.get(g.uuid)
        cap = b.cap(extra_bytes(rig, g))
        free = g.free_bytes if cap is None else min(g.free_bytes, cap)
        free -= b.extra_per_layer_bytes * layers.get(g.uuid, 0)
        gpus.append(replace(g, free_bytes=max(0, free)))
    return replace(rig, gpus=gpus)


def shortfalls(rig: Rig, plan: Plan, budgets: Budgets) -> list[tuple[DevicePlan, int]]:
    """Devices the corrected ledger says do not fit, with how many bytes they are short."""
    out = []
    for d in plan.gpus:
        g = rig.gpus[d.gpu_index]
        b = budgets.get(g.uuid)
        cap = b.cap(extra_bytes(rig, g))
        free = d.free_bytes if cap is None else min(d.free_bytes, cap)
        need = d.total_bytes + b.extra_per_layer_bytes * d.layers + d.reserve_bytes
        if need > free:
            out.append((d, need - free))
    cpu = plan.cpu
    if not cpu.fits:
        out.append((cpu, cpu.total_bytes - cpu.usable_bytes))
    return out


def fits(rig: Rig, plan: Plan, budgets: Budgets) -> bool:
    return not shortfalls(rig, plan, budgets)


def fastest_fitting(model: ModelInfo, rig: Rig, settings: PlanSettings, budgets: Budgets,
                    keep_listed: bool = True) -> PlanSettings | None:
    """Auto-fit (fastest) with the corrected budgets, on the GPUs the settings list. A GPU auto-fit leaves
    empty stays listed with no layers (the engine gets the same cards) when it still fits there, unless
    keep_listed is False. A retry
    keeps the model on GPUs when a GPU plan fits, even where the speed model prefers RAM (tiny models)."""
    devices = settings.devices if settings.devices is not None else tuple(range(len(rig.gpus)))
    base = settings.with_(devices=devices)
    guess: dict[str, int] = {}
    for _ in range(4):  # the extra per layer depends on the layers auto-fit gives the card
        crig = corrected_rig(rig, budgets, guess)
        s = auto_fit(model, crig, base, "fastest").settings
        if not s.gpulayers and devices:
            counts, _ = _fill(_Evaluator(model, crig), base.with_(moecpu=0), devices)
            if sum(counts):
                s = base.with_(moecpu=0, gpulayers=sum(counts), tensor_split=tuple(float(c) for c in counts))
        for cand in ((_relist(s, devices), s) if keep_listed else (s,)):
            p = make_plan(model, rig, cand)
            if fits(rig, p, budgets):
                return budgets.into(cand)
        guess = {rig.gpus[d.gpu_index].uuid: max(d.layers, 1) for d in p.gpus}
    return None


def _relist(s: PlanSettings, devices: tuple[int, ...]) -> PlanSettings:
    if not s.devices or set(s.devices) == set(devices) or not s.tensor_split:
        return s
    counts = dict(zip(s.devices, s.tensor_split))
    split = tuple(float(counts.get(i, 0.0)) for i in devices)
    return s.with_(devices=devices, tensor_split=split)


def recover(model: ModelInfo, rig: Rig, plan: Plan, device: int | None, requested_mib: float | None) -> Recovery:
    """The plan to launch after `plan` ran out of memory on engine device `device` allocating
    `requested_mib` MiB (either may be None when the log does not say)."""
    settings = plan.settings
    budgets = Budgets.from_settings(settings)
    if not plan.gpus or sum(d.layers for d in plan.gpus) == 0:
        return Recovery(None, "No plan fits: no layer was on a GPU, so there is nothing smaller to try.", budgets)
    idx, budgets = learn(rig, plan, device, requested_mib, budgets)
    d = plan.gpus[idx]
    b = budgets.get(rig.gpus[d.gpu_index].uuid)
    what = f"{d.name} holds less than {b.cap(extra_bytes(rig, rig.gpus[d.gpu_index])) / MIB:,.0f} MiB"
    if b.extra_per_layer_bytes:
        what += f" and needs {b.extra_per_layer_bytes / MIB:,.0f} MiB more per layer than predicted"
    nxt = fastest_fitting(model, rig, settings, budgets)
    if nxt is None:
        return Recovery(None, f"No plan fits: {what}, and the layers cannot be placed on the other devices "
                              "or in RAM.", budgets)
    return Recovery(nxt, f"{what}; the fastest plan that fits now has {nxt.gpulayers} GPU layers.", budgets)
