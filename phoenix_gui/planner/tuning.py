"""Which plans to measure when tuning, what a measured run teaches, and the best plan once learned.

Pure: plans in, plans out. The measuring is backends/tune.py's.

Candidates are an experiment design. A token's time is base + sum of scale x time over the devices + hop
scale x hop time, and every layer is somewhere: plans that only shift layers among the same devices vary
the device columns along a near-constant total and keep the hop count fixed, so the hop cost and the
device costs cannot be told apart. The pool therefore also holds plans on fewer cards (another number of
hops), cards emptied into RAM and the model wholly in RAM; from it, after the predicted best, each next
plan is the one that adds the most to the determinant of the fit's information about the device costs
(D-optimal, the hop cost a nuisance), the quicker run winning near-ties. On a rig without GPUs the
candidates differ in what the CPU can change: threads and batch size.

Slice runs come first after the predicted best: the model's first layers alone on one device
(model/slice.py). With layers in RAM the CPU takes most of every whole-model token, so a fast card's
few percent drown in the noise; alone on a slice, nearly the whole token is that device's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations, permutations

import numpy as np

from ..hardware.rig import Rig
from ..model.info import ModelInfo
from ..model.slice import slice_info
from ..hardware.calibration import Calibration
from .calibration import NOISE, Fit, Run, fit_terms, prior_information, with_calibration
from .ledger import Plan
from .plan import make_plan
from .budgets import Budgets
from .recovery import fastest_fitting, fits
from .settings import PlanSettings

RUN_PROMPT, RUN_GEN = 128, 32  # the fixed benchmark of every tuning run (backends/tune.py)
# ... repeated on the loaded model (a repeat costs seconds, a load tens): the run's speed is the mean, and
# the repeats' spread is the measured noise the fit weighs the runs by. Published llama-bench spreads of
# one 128-token repeat: median 0.4 % fully on a GPU, 1.1 % GPU+RAM (benchmarks/llama_bench_spread.py)
RUN_REPEATS = 3
TIE = 0.05  # plans within this fraction of the most informative one are told apart by run time
# a plan whose benchmark would take longer than this many times the predicted best's, and longer than
# CHEAP_S, is not worth its information (the whole model in RAM of a big model: minutes)
SLOW, CHEAP_S = 4.0, 30.0
NOISE_FLOOR = 0.001  # three repeats that happen to agree do not make a run exact
# a slice run: the first few layers of the model alone on one device (model/slice.py), at a context that
# holds the benchmark; as many layers as fit, up to the first of these
SLICE_LAYERS, CPU_SLICE_LAYERS, SLICE_CONTEXT = (8, 6, 4, 2, 1), 4, 512
# a slice keeps Phoenix's guessed margin free (the candidates probe without one): it is run for a card's
# speed and, loaded, for the engine's memory beyond the plan there; a slice that runs out of memory on an
# engine that needs more than the plan teaches neither, and that card's excess stays unknown to the
# calibrated winner (bench_tune: a winner planned without it no longer kept the margin once measured)
SLICE_MARGIN_MIB = 256.0


@dataclass(frozen=True)
class SliceRun:
    """A run of the model's first `layers` layers alone on one device (gpu: its index; None: the CPU)."""
    gpu: int | None
    layers: int
    model: ModelInfo
    settings: PlanSettings


def features(model: ModelInfo, rig: Rig, settings: PlanSettings, seconds_per_token: float = 0.0) -> Run:
    """The speed model's parts of this plan's token time, read through the planner itself: a
    calibration that keeps one part (factor 1) and drops the others (factor 0) leaves that part. The
    output layer's part of its card's time is told apart (calibration.fit_terms prices it explicitly)."""
    uuids = [g.uuid for g in rig.gpus]

    def t(gpu=None, cpu=0.0, hop=0.0, m=model, s=settings) -> float:
        cal = Calibration(gpu_scale={u: (1.0 if u == gpu else 0.0) for u in uuids}, cpu_scale=cpu, hop_scale=hop)
        return 1.0 / make_plan(m, with_calibration(rig, cal), s).predicted_tokens_per_s

    base = t()
    times = [t(gpu=u) - base for u in uuids] + [t(cpu=1.0) - base]
    p = make_plan(model, rig, settings)
    holder = next((d.gpu_index for d in p.gpus if d.has_output), None if not p.cpu.has_output else len(uuids))
    output = 0.0
    if holder is not None and model.output_bytes:
        key = (model.output_bytes, model.n_embd, None if holder == len(uuids) else uuids[holder], settings.threads,
               settings.backend, rig.system.ram_bandwidth_gbs)
        if key not in _OUTPUT_S:
            # the output layer's time alone on its card: one layer with the output, less one layer without
            one = slice_info(model, 1)
            bare = replace(one, output_tensors=[], tied_embeddings=False)
            alone = settings.with_(context=256) if holder == len(uuids) else with_counts(settings.with_(context=256), {holder: 2})
            if holder == len(uuids):
                alone = alone.with_(devices=(), gpulayers=0, tensor_split=None)
            u = None if holder == len(uuids) else uuids[holder]
            _OUTPUT_S[key] = max(0.0, (t(gpu=u, cpu=float(u is None), m=one, s=alone) - t(m=one, s=alone))
                                 - (t(gpu=u, cpu=float(u is None), m=bare, s=alone) - t(m=bare, s=alone)))
        output = min(_OUTPUT_S[key], times[holder])
    return Run(times, t(hop=1.0) - base, base, seconds_per_token, output, holder)


_OUTPUT_S: dict = {}  # the output layer's seconds on one device, by model output, device and threads


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
               limit: int = 6, noise: float = NOISE, done: list[PlanSettings] = (),
               taught: list[tuple[ModelInfo, PlanSettings]] = ()) -> list[PlanSettings]:
    """Up to `limit` different plans that fit, the predicted best first, then in the order that teaches
    the most (see design); none of `done`, the plans already measured, whose runs count, as do the
    slice runs in `taught` (their model, their settings)."""
    budgets = budgets or Budgets()
    if not rig.gpus or base.devices == ():
        measured = {_key(s) for s in done}
        return [s for s in _cpu_candidates(model, rig, base, budgets, limit + len(done)) if _key(s) not in measured][:limit]
    best = fastest_fitting(model, rig, base, budgets, keep_listed=False)
    if best is None:
        return []
    return design(model, rig, [best] + pool(model, rig, base, best, budgets), limit, noise, budgets, done, taught)


def slice_limit(max_runs: int) -> int:
    """How many of a tune's runs may be slice runs: the predicted best, at least one designed candidate
    and the final check of the calibrated winner stay runs of the whole model (measured on bench_tune's
    rigs: every device's cost within 5 % either way; the whole-model runs are what the winner is kept from)."""
    return max(0, max_runs - 3)


def slice_runs(model: ModelInfo, rig: Rig, base: PlanSettings, best: PlanSettings | None, budgets: Budgets,
               limit: int) -> list[SliceRun]:
    """At most `limit` slice runs, one per device: each GPU alone with as many of the model's first layers
    as fit (SLICE_LAYERS), and the CPU with CPU_SLICE_LAYERS. First the devices that carry the smallest
    share of the predicted best's token time (whole-model runs tell those the worst), then the devices
    it leaves out, the CPU last of those."""
    if not rig.gpus or base.devices == () or limit <= 0:
        return []
    devices = base.devices if base.devices is not None else tuple(range(len(rig.gpus)))
    small = base.with_(context=min(base.context, SLICE_CONTEXT), margin_mib=max(base.margin_mib, SLICE_MARGIN_MIB))
    out: list[SliceRun] = []
    for d in devices:
        for k in (k for k in SLICE_LAYERS if k <= model.n_layer):
            m = slice_info(model, k)
            s = with_counts(small, {d: k + 1})
            if _ok(m, rig, s, budgets):
                out.append(SliceRun(d, k, m, budgets.into(s)))
                break
    k = min(CPU_SLICE_LAYERS, model.n_layer)
    cpu = SliceRun(None, k, slice_info(model, k), small.with_(devices=(), gpulayers=0, tensor_split=None))
    if _ok(cpu.model, rig, cpu.settings, budgets):
        out.append(cpu)
    share: dict = {}
    if best is not None:  # the devices that hold layers in it, by their share of its token time
        f = features(model, with_calibration(rig, None), best)
        total = f.base + sum(f.times) + f.hops
        share = {i: f.times[i] / total for i, n in counts_of(best, rig).items() if n > 0}
        if make_plan(model, rig, best).cpu.layers > 0:
            share[None] = f.times[-1] / total
    unused = 2.0  # after every used device; a GPU before the CPU
    return sorted(out, key=lambda r: share.get(r.gpu, unused + (r.gpu is None)))[:limit]


def pool(model: ModelInfo, rig: Rig, base: PlanSettings, best: PlanSettings, budgets: Budgets) -> list[PlanSettings]:
    """Plans around the predicted best that load the devices differently: each card's layers moved to
    RAM (half, all), between cards, fewer everywhere, cards auto-fit left out, the best plan on smaller
    sets of cards (another number of hops), and the model wholly in RAM. design() keeps those that fit."""
    total = model.n_layer + 1
    c = counts_of(best, rig)
    used = [d for d, n in c.items() if n > 0]
    everyone = base.devices if base.devices is not None else tuple(range(len(rig.gpus)))
    trials: list[dict[int, int]] = []
    for d in used:
        trials += [{**c, d: c[d] - max(1, round(c[d] * 0.5))}, {**c, d: 0}]
    for a, b in permutations(used, 2):
        trials += [{**c, a: c[a] - k, b: c[b] + k} for k in {max(1, round(c[a] * f)) for f in (0.2, 0.5)}]
    for f in (0.15, 0.5, 0.85):
        trials.append({d: max(0, n - max(1, round(n * f))) for d, n in c.items()})
    donor = max(used, key=c.__getitem__) if used else None
    for d in (d for d in everyone if d not in used):  # a card auto-fit left out: is it slower?
        for k in {max(1, round(c[donor] * f)) for f in (0.2, 0.5)} if donor is not None else {4}:
            trials += [{**c, d: k}, {**c, donor: c[donor] - k, d: k} if donor is not None else {d: k}]
    out = [with_counts(best, {d: n for d, n in t.items() if n}) for t in trials
           if sum(t.values()) <= total and min(t.values(), default=0) >= 0]
    # fewer cards, fewer hops: each card alone and every card but one (all smaller sets on 2-3 cards,
    # without auto-fitting hundreds of sets on a rig of many)
    subsets = {(d,) for d in everyone} | {tuple(x for x in everyone if x != d) for d in everyone}
    for sub in sorted(subsets - {tuple(everyone), ()}, key=lambda t: (len(t), t)):
        s = fastest_fitting(model, rig, best.with_(devices=sub), budgets, keep_listed=False)
        if s is not None:
            out.append(s)
    out.append(with_counts(best, {}))  # all in RAM: the CPU's cost without a hop (design drops it where slow)
    return out


def design(model: ModelInfo, rig: Rig, plans: list[PlanSettings], limit: int, noise: float = NOISE,
           budgets: Budgets | None = None, done: list[PlanSettings] = (),
           taught: list[tuple[ModelInfo, PlanSettings]] = ()) -> list[PlanSettings]:
    """The first plan (unless measured), then greedily the fitting plan that most increases the
    determinant of the fit's information (X'WX + prior) about the device costs (D-optimal, the hop a
    nuisance: see _device_gain): the runs together pin down every device's cost, not only each alone;
    among plans within a few percent of the most informative, the quickest run.
    Plans already measured (`done`) count as information and are not proposed again."""
    budgets = budgets or Budgets()
    bare = with_calibration(rig, None)

    def row(s: PlanSettings, m: ModelInfo = model) -> np.ndarray:  # a run's features as the fit weighs them
        f = features(m, bare, s)
        return np.array(list(f.times) + [f.hops]) / (f.base + sum(f.times) + f.hops)

    info = prior_information(len(rig.gpus), noise)
    for x in [row(s) for s in done] + [row(s, m) for m, s in taught]:
        info += np.outer(x, x)
    measured = {_key(s) for s in done}
    rows: list[tuple[PlanSettings, np.ndarray, float]] = []
    seen: set = set()
    for s in plans:
        p = _ok(model, rig, s, budgets) if _key(s) not in seen else None
        seen.add(_key(s))
        if p is not None:
            rows.append((budgets.into(s), row(s), run_seconds(p)))
    if not rows:
        return []
    quick = max(SLOW * rows[0][2], CHEAP_S)
    left = [i for i, (s, _, secs) in enumerate(rows) if _key(s) not in measured and (i == 0 or secs <= quick)]
    chosen: list[int] = []
    while left and len(chosen) < limit:
        if left[0] == 0:
            i = 0  # the first plan (the predicted best) is measured first
        else:
            gains = {i: _device_gain(info, rows[i][1]) for i in left}
            top = max(gains.values())
            i = min((i for i, g in gains.items() if g >= top * (1 - TIE)), key=lambda i: rows[i][2])
        chosen.append(i)
        left.remove(i)
        info += np.outer(rows[i][1], rows[i][1])
    return [rows[i][0] for i in chosen]


def _device_gain(info: np.ndarray, x: np.ndarray) -> float:
    """How much a run with features x adds to log det of what the runs tell about the device costs,
    the hop cost (last) left free: the device block of the information once the hop is profiled out
    (D-optimal for the devices, the hop a nuisance). The hop is a few tenths of a millisecond of a token,
    which a handful of runs at 0.5-1 % noise cannot pin down, so a run is not spent on it for itself
    (measured: 86.5 % vs 84.5 % of bench_tune's rigs within 5 % at 0.5 % noise, 64.5 % vs 62 % at 1 %)."""
    q = float(x @ np.linalg.solve(info, x))
    return float(np.log1p(q) - np.log1p(x[-1] ** 2 / info[-1, -1]))


def run_seconds(p: Plan, repeats: int = RUN_REPEATS) -> float:
    """Predicted seconds of one tuning run's benchmark (the load comes on top and is about the same for all)."""
    return repeats * (RUN_PROMPT / max(p.predicted_prompt_tokens_per_s, 1e-3) + RUN_GEN / max(p.predicted_tokens_per_s, 1e-3))


def measured_noise(repeats: list[list[float]]) -> float | None:
    """The relative noise of one run's mean speed, from the spread of its repeats pooled over the runs
    (each run's variance about its own mean: runs of different plans differ in speed, not in noise).
    None without a run of two repeats or more."""
    var, dof, r = 0.0, 0, []
    for xs in repeats:
        xs = [x for x in xs if x > 0]
        if len(xs) < 2:
            continue
        m = float(np.mean(xs))
        var += float(np.sum((np.array(xs) / m - 1.0) ** 2))
        dof += len(xs) - 1
        r.append(len(xs))
    if not dof:
        return None
    return max(float(np.sqrt(var / dof / np.mean(r))), NOISE_FLOOR)


def _key(s: PlanSettings) -> tuple:
    return (s.devices, s.gpulayers, s.tensor_split, s.threads, s.batch, s.context)


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
    """Auto-fit on the calibrated rig on every set of the cards, then single-layer moves between any two
    devices (any card, RAM) while the calibrated prediction improves and everything fits, the cards in
    auto-fit's order and in the asked one; from the few best ends, the same with the cards in every order
    and two moves at once where one does not help (_climb). A single-move climb from auto-fit's start
    missed 'the second card with one layer, the first with one more' and a better order of the cards
    (bench_tune's misses: the calibration knew the plan, the search did not reach it)."""
    budgets = budgets or Budgets()
    if not rig.gpus or base.devices == ():
        return None
    devices = base.devices if base.devices is not None else tuple(range(len(rig.gpus)))
    starts = []
    sets = permutations if len(devices) <= ORDERS_UP_TO else combinations  # each order: auto-fit starts from it
    for k in range(len(devices), 0, -1):
        for sub in sets(devices, k):
            s = fastest_fitting(model, rig, base.with_(devices=sub), budgets, keep_listed=False)
            if s is not None and all(_key(s) != _key(t) for t in starts):
                starts.append(s)
    climbed: dict[tuple, tuple[PlanSettings, float, tuple[int, ...]]] = {}  # by end and order
    for s in starts:
        own = tuple(d for d, n in counts_of(s, rig).items() if n > 0)
        # every card may take layers: in the start's order (auto-fit's), the others after, and in the asked order
        for order in dict.fromkeys((own + tuple(d for d in devices if d not in own), devices)):
            s2, tps = _climb(model, rig, s, budgets, order)
            climbed.setdefault((_key(s2), order), (s2, tps, order))
    # from the few best ends: the cards in every order (the first card holds buffers the others do not, the
    # last the output layer; up to ORDERS_UP_TO cards), and two moves at once where no single move helps
    top = sorted(climbed.values(), key=lambda v: -v[1])[:PAIR_CLIMBS]
    best_s, best_t = None, 0.0
    for s, tps, order in top:
        orders = permutations(devices) if len(devices) <= ORDERS_UP_TO else (order,)
        for o in dict.fromkeys((order, *orders)):
            s2, t2 = _climb(model, rig, s, budgets, o, pairs=True)
            if t2 > best_t * 1.0001:
                best_s, best_t = s2, t2
    return best_s


PAIR_CLIMBS, ORDERS_UP_TO = 3, 3


def _climb(model, rig, s: PlanSettings, budgets: Budgets, order: tuple[int, ...] = (), pairs: bool = False,
           max_steps: int = 200) -> tuple[PlanSettings, float]:
    """From s, single-layer moves between any two devices (the cards in `order`, listed in that order
    while they hold layers, and RAM) while the prediction improves; where none does, two such moves at
    once (a card one layer short of the best split cannot take a layer until another leaves; a card left
    out by auto-fit may pay only with a layer more on another), and on from there."""
    start = counts_of(s, rig)
    c = {d: start.get(d, 0) for d in (*order, *(d for d in start if d not in order))}
    s = with_counts(s, {d: n for d, n in c.items() if n})
    p = _ok(model, rig, s, budgets)
    tps = p.predicted_tokens_per_s if p else 0.0
    total = model.n_layer + 1
    keys = list(c)
    singles = [(a, b) for a in keys + [None] for b in keys + [None] if a != b]  # None: RAM

    def moved(counts, moves):
        t = dict(counts)
        for src, dst in moves:
            if src is None and sum(t.values()) >= total or src is not None and t[src] == 0:
                return None
            if src is not None:
                t[src] -= 1
            if dst is not None:
                t[dst] += 1
        return t

    for _ in range(max_steps):
        step = None
        for two in (False, True) if pairs else (False,):
            moves = [(m,) for m in singles] if not two else \
                [(m1, m2) for i, m1 in enumerate(singles) for m2 in singles[i:] if m1[0] != m2[1] and m1[1] != m2[0]]
            for mv in moves:
                t = moved(c, mv)
                if t is None or t == c:
                    continue
                s2 = with_counts(s, {d: n for d, n in t.items() if n})
                p2 = _ok(model, rig, s2, budgets)
                if p2 and p2.predicted_tokens_per_s > tps * 1.0001:
                    step, tps = (t, s2), p2.predicted_tokens_per_s
            if step is not None:
                break
        if step is None:
            break
        c, s = step
    return budgets.into(s), tps


def keep(model: ModelInfo, rig: Rig, runs: list[tuple[PlanSettings, float]], cal: Calibration | None = None) -> PlanSettings | None:
    """What to keep among the measured plans: the one measured fastest (a plan measured twice by the mean
    of its runs). The measurements win over the fit: a fit that ranks a plan first which then measured
    slower than another is wrong about that plan, and keeping it would recommend a plan slower than one
    the tune ran (what the fit thought is reported beside it: disagreement)."""
    got: dict[tuple, list] = {}
    for s, t in runs:
        if t > 0:
            got.setdefault(_key(s), [s, []])[1].append(t)
    if not got:
        return None
    return max(got.values(), key=lambda v: sum(v[1]) / len(v[1]))[0]


def disagreement(model: ModelInfo, rig: Rig, runs: list[tuple[PlanSettings, float]], cal: Calibration,
                 kept: PlanSettings, noise: float) -> tuple[PlanSettings, float, float] | None:
    """(the plan the fit ranks first among the measured, its calibrated and its measured tokens/s) when
    that is not the kept plan and it measured slower than the kept one by more than two runs' noise; None
    when the fit and the measurements agree."""
    ok = [(s, t) for s, t in runs if t > 0]
    if not ok:
        return None
    cal_rig = with_calibration(rig, cal)
    pred = {_key(s): (s, make_plan(model, cal_rig, s).predicted_tokens_per_s) for s, _ in ok}
    top_s, top_p = max(pred.values(), key=lambda v: v[1])
    mean = lambda k: sum(t for s, t in ok if _key(s) == k) / sum(1 for s, _ in ok if _key(s) == k)  # noqa: E731
    if _key(top_s) == _key(kept) or mean(_key(top_s)) >= mean(_key(kept)) * (1 - 2 * max(noise, NOISE_FLOOR)):
        return None
    return top_s, top_p, mean(_key(top_s))


def learned(model: ModelInfo, rig: Rig, runs: list[tuple[PlanSettings, float]], prior: Calibration | None = None,
            noise: float = NOISE, slices: list[tuple[ModelInfo, PlanSettings, float]] = ()) -> Calibration:
    """Fit the calibration on (plan settings, measured tokens/s) pairs and the slice runs (their model,
    settings, tokens/s); the speed model is the prior.
    Whatever calibration the rig carries is set aside: the features are the bare model's."""
    return learned_fit(model, rig, runs, prior, noise, slices).cal


def learned_fit(model: ModelInfo, rig: Rig, runs: list[tuple[PlanSettings, float]], prior: Calibration | None = None,
                noise: float = NOISE, slices: list[tuple[ModelInfo, PlanSettings, float]] = ()) -> Fit:
    """learned(), with the shared terms and the factors the runs left on a bound (calibration.Fit)."""
    bare = with_calibration(rig, None)
    rs = [features(model, bare, s, 1.0 / tps) for s, tps in runs if tps > 0]
    rs += [replace(features(m, bare, s, 1.0 / tps), slice=True) for m, s, tps in slices if tps > 0]
    return fit_terms(rs, [g.uuid for g in rig.gpus], prior, noise)


def pin_down(model: ModelInfo, rig: Rig, base: PlanSettings, budgets: Budgets, term: str,
             done: list[PlanSettings] = ()) -> PlanSettings | None:
    """A whole-model plan, not yet measured, that tells `term` (a name from calibration.Fit.held) apart
    from the rest: a card's factor from a plan on that card alone (all of a token's device time is
    its own); the CPU's from the predicted best with a quarter of its GPU layers moved to RAM; the hop's
    from a plan with another number of cards; the fixed cost, the output layer and the slice factor
    from the whole model on one card (a slice ran on it: the two differ in layers, not in those)."""
    measured = {_key(s) for s in done}
    best = fastest_fitting(model, rig, base, budgets, keep_listed=False)
    if best is None:
        return None
    used = [d for d, n in counts_of(best, rig).items() if n > 0]
    tries: list[PlanSettings | None] = []
    if term.startswith("gpu:"):
        d = next((i for i, g in enumerate(rig.gpus) if f"gpu:{g.uuid}" == term), None)
        if d is not None:
            tries.append(fastest_fitting(model, rig, base.with_(devices=(d,)), budgets, keep_listed=False))
    elif term == "cpu":
        c = counts_of(best, rig)
        tries.append(with_counts(best, {d: n - max(1, n // 4) for d, n in c.items() if n - max(1, n // 4) > 0}))
    elif term == "hop":
        subsets = [(d,) for d in used] if len(used) > 1 else [tuple(range(len(rig.gpus)))]
        tries += [fastest_fitting(model, rig, base.with_(devices=sub), budgets, keep_listed=False) for sub in subsets]
    else:
        tries += [fastest_fitting(model, rig, base.with_(devices=(d,)), budgets, keep_listed=False) for d in used]
    for s in tries:
        if s is not None and _key(s) not in measured and _ok(model, rig, s, budgets):
            return budgets.into(s)
    return None
