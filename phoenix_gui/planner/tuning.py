"""Which plans to measure when tuning, what a measured run teaches, and the best plan once learned.

Pure: plans in, plans out. The measuring is backends/tune.py's.

Candidates: the predicted best that fits, then neighbours that each move layers off one card (to RAM),
one with fewer GPU layers on every card, moves between cards where they fit, and the plan without the
slowest card. Each neighbour changes one device's load, so a handful of runs separate every device's
cost. On a rig without GPUs they differ in what the CPU can change: threads and batch size.
"""

from __future__ import annotations

from itertools import combinations

from ..hardware.rig import Rig
from ..model.info import ModelInfo
from .calibration import NOISE, Calibration, Run, fit, with_calibration
from .ledger import Plan
from .plan import make_plan
from .recovery import Budgets, fastest_fitting, fits
from .settings import PlanSettings


def features(model: ModelInfo, rig: Rig, settings: PlanSettings, seconds_per_token: float = 0.0) -> Run:
    """The speed model's parts of this plan's token time, read through the planner itself: a
    calibration that keeps one part (factor 1) and drops the others (factor 0) leaves that part."""
    uuids = [g.uuid for g in rig.gpus]

    def t(gpu=None, cpu=0.0, hop=0.0) -> float:
        cal = Calibration(gpu_scale={u: (1.0 if u == gpu else 0.0) for u in uuids}, cpu_scale=cpu, hop_scale=hop)
        return 1.0 / make_plan(model, with_calibration(rig, cal), settings).predicted_tokens_per_s

    base = t()
    times = [t(gpu=u) - base for u in uuids] + [t(cpu=1.0) - base]
    return Run(times, t(hop=1.0) - base, base, seconds_per_token)


def counts_of(s: PlanSettings, rig: Rig) -> dict[int, int]:
    """GPU index -> layers on it."""
    devices = s.devices if s.devices is not None else tuple(range(len(rig.gpus)))
    split = s.tensor_split or ()
    return {d: int(split[k]) if k < len(split) else 0 for k, d in enumerate(devices)}


def with_counts(base: PlanSettings, counts: dict[int, int]) -> PlanSettings:
    devices = tuple(d for d in counts)
    n = sum(counts.values())
    return base.with_(devices=devices, gpulayers=n, tensor_split=tuple(float(c) for c in counts.values()) if n else None)


def _ok(model, rig, s: PlanSettings, budgets: Budgets) -> Plan | None:
    p = make_plan(model, rig, s)
    return p if fits(rig, p, budgets) and p.fits else None


def candidates(model: ModelInfo, rig: Rig, base: PlanSettings, budgets: Budgets | None = None,
               limit: int = 6) -> list[PlanSettings]:
    """Up to `limit` different plans that fit, the predicted best first."""
    budgets = budgets or Budgets()
    if not rig.gpus or base.devices == ():
        return _cpu_candidates(model, rig, base, budgets, limit)
    best = fastest_fitting(model, rig, base, budgets, keep_listed=False)
    if best is None:
        return []
    out: list[PlanSettings] = []
    seen: set = set()
    total = model.n_layer + 1

    def add(s: PlanSettings) -> None:
        key = (s.devices, s.gpulayers, s.tensor_split, s.threads, s.batch, s.context)
        if (key not in seen and len(out) < limit and (s.gpulayers or 0) <= total
                and min(s.tensor_split or (0,)) >= 0 and _ok(model, rig, s, budgets)):
            seen.add(key)
            out.append(budgets.into(s))

    add(best)
    c = counts_of(best, rig)
    used = [d for d, n in c.items() if n > 0]
    for d in used:  # layers off one card to RAM: that card's cost, the CPU's
        k = max(1, round(c[d] * 0.5))
        add(with_counts(best, {**c, d: c[d] - k}))
    everyone = base.devices if base.devices is not None else tuple(range(len(rig.gpus)))
    for d in (d for d in everyone if d not in used):  # a card auto-fit left out gets layers once: is it slower?
        donor = max(used, key=c.__getitem__) if used else None
        k = max(1, round(c[donor] * 0.5)) if donor is not None else 4
        before = len(out)
        for trial in ({**c, d: k} if sum(c.values()) + k <= total else None,
                      {**c, donor: c[donor] - k, d: k} if donor is not None else None):
            if trial is not None and len(out) == before:
                add(with_counts(best, trial))
    if used:  # fewer GPU layers everywhere: more RAM, the CPU's cost again at another load
        add(with_counts(best, {d: max(0, n - max(1, round(n * 0.15))) for d, n in c.items()}))
    for a, b in combinations(used, 2):  # between cards, where there is room
        for src, dst in ((a, b), (b, a)):
            k = max(1, round(c[src] * 0.2))
            add(with_counts(best, {**c, src: c[src] - k, dst: c[dst] + k}))
    if len(used) > 1:  # without the card the model ranks slowest per layer: one hop less
        probe = features(model, rig, best)
        per_layer = {d: probe.times[d] / max(1, c[d]) for d in used}
        slow = max(used, key=per_layer.__getitem__)
        rest = fastest_fitting(model, rig, best.with_(devices=tuple(d for d in used if d != slow)), budgets,
                               keep_listed=False)
        if rest is not None:
            add(rest)
    return out


def _cpu_candidates(model, rig, base: PlanSettings, budgets, limit) -> list[PlanSettings]:
    cores = max(1, rig.system.physical_cores)
    logical = max(cores, rig.system.logical_cores)
    cpu = base.with_(devices=(), gpulayers=0, tensor_split=None)
    opts = [cpu, cpu.with_(threads=cores), cpu.with_(threads=max(1, cores // 2)), cpu.with_(batch=max(64, base.batch // 2)),
            cpu.with_(threads=logical), cpu.with_(context=max(256, base.context // 2))]
    out, seen = [], set()
    for s in opts:
        key = (s.threads, s.batch, s.context)
        if key not in seen and len(out) < limit and _ok(model, rig, s, budgets):
            seen.add(key)
            out.append(budgets.into(s))
    return out


def calibrated_best(model: ModelInfo, rig: Rig, base: PlanSettings, budgets: Budgets | None = None) -> PlanSettings | None:
    """Auto-fit on the calibrated rig, then single-layer moves between any two devices (cards and RAM)
    while the calibrated prediction improves and everything fits; also from every smaller set of cards."""
    budgets = budgets or Budgets()
    if not rig.gpus or base.devices == ():
        return None
    devices = base.devices if base.devices is not None else tuple(range(len(rig.gpus)))
    starts = []
    for k in range(len(devices), 0, -1):
        for sub in combinations(devices, k):
            s = fastest_fitting(model, rig, base.with_(devices=sub), budgets, keep_listed=False)
            if s is not None:
                starts.append(s)
    best_s, best_t = None, 0.0
    for s in starts:
        s, tps = _climb(model, rig, s, budgets)
        if tps > best_t * 1.0001:
            best_s, best_t = s, tps
    return best_s


def _climb(model, rig, s: PlanSettings, budgets: Budgets, max_steps: int = 200) -> tuple[PlanSettings, float]:
    c = counts_of(s, rig)
    p = _ok(model, rig, s, budgets)
    tps = p.predicted_tokens_per_s if p else 0.0
    total = model.n_layer + 1
    for _ in range(max_steps):
        moves = []
        keys = list(c)
        for src in keys + [None]:  # None: RAM
            for dst in keys + [None]:
                if src == dst or (src is not None and c[src] == 0) or (src is None and sum(c.values()) >= total):
                    continue
                t = dict(c)
                if src is not None:
                    t[src] -= 1
                if dst is not None:
                    t[dst] += 1
                moves.append(t)
        step = None
        for t in moves:
            s2 = with_counts(s, t)
            p2 = _ok(model, rig, s2, budgets)
            if p2 and p2.predicted_tokens_per_s > tps * 1.0001:
                step, tps = (t, s2), p2.predicted_tokens_per_s
        if step is None:
            break
        c, s = step
    return budgets.into(s), tps


def keep(model: ModelInfo, rig: Rig, runs: list[tuple[PlanSettings, float]], cal: Calibration) -> PlanSettings | None:
    """What to keep among the measured plans: the fastest by the calibration fitted on all of them,
    which pools every run and so separates plans closer than one run's noise. Plans the calibration
    cannot tell apart (within 1 %) are
    decided by their measured speed, averaged over their runs."""
    ok = [(s, t) for s, t in runs if t > 0]
    if not ok:
        return None
    cal_rig = with_calibration(rig, cal)
    pred = [make_plan(model, cal_rig, s).predicted_tokens_per_s for s, _ in ok]
    top = max(pred)
    near = [s for (s, _), p in zip(ok, pred) if p >= top * 0.99]

    def measured(s):
        got = [t for s2, t in ok if s2 == s]
        return sum(got) / len(got)
    return max(near, key=measured)


def learned(model: ModelInfo, rig: Rig, runs: list[tuple[PlanSettings, float]], prior: Calibration | None = None,
            noise: float = NOISE) -> Calibration:
    """Fit the calibration on (plan settings, measured tokens/s) pairs; the speed model is the prior.
    Whatever calibration the rig carries is set aside: the features are the bare model's."""
    bare = with_calibration(rig, None)
    rs = [features(model, bare, s, 1.0 / tps) for s, tps in runs if tps > 0]
    return fit(rs, [g.uuid for g in rig.gpus], prior, noise)
