"""Auto-fit: choose GPU layers, an exact tensor split and MoE expert offload so every device fits.

Fastest: fill the GPUs in order of effective bandwidth (spec bandwidth x architecture efficiency),
or, when the rig carries a calibration from a tune on this PC, of the speed measured there; each as
full as it can get, by binary search over its layer count with the real ledger; layers
that fit nowhere stay in RAM. The split is emitted as integer layer counts, which llama.cpp
reproduces exactly. GPUs that end up empty are left out of the device list (a listed GPU still
pays a CUDA context). For MoE models, keeping every layer's attention on the GPUs and moving
the experts of the first N blocks to RAM (--moecpu N) is tried too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hardware.rig import Rig
from ..validate import CONTEXT_MAX
from ..hardware.specs import find_spec
from ..model.info import ModelInfo
from .kv import pad
from .ledger import Plan
from .placement import experts_in_ram_blocks, experts_in_ram_overrides
from .plan import make_plan, selected_gpus
from .settings import PlanSettings
from .speed import gpu_rate, noise


@dataclass
class FitResult:
    plan: Plan
    settings: PlanSettings
    objective: str
    evaluations: int


class _Evaluator:
    def __init__(self, model: ModelInfo, rig: Rig):
        self.model, self.rig, self.count = model, rig, 0
        self._memo: dict[tuple, tuple[PlanSettings, Plan]] = {}
        self.rivals: dict[int, tuple[float, float, str]] = {}  # id(plan) -> a rival within noise

    def plan(self, s: PlanSettings) -> Plan:
        """make_plan, once per distinct settings: the searches reach the same split from several sides (a
        fifth of a search's plans were repeats). Callers do not change the plans they get."""
        key = (s.devices, s.gpulayers, s.tensor_split, s.moecpu, s.overrides, s.context, s.cache_type_k,
               s.cache_type_v, s.margin_mib)
        got = self._memo.get(key)
        if got is not None and got[0] == s:
            return got[1]
        self.count += 1
        p = make_plan(self.model, self.rig, s)
        self._memo[key] = (s, p)
        return p


def _gpu_speed(g, rig: Rig) -> float:
    """Decode rate of a card alone (bandwidth, architecture and chip size): the fill order. A tune's
    calibration scales the model's time on that card by what was measured (2.0: twice as slow), so
    the measured per-layer cost decides the order, not the spec sheet."""
    spec = find_spec(g.name, round(g.total_bytes / (1 << 30)))
    rate = gpu_rate(g.bandwidth_gbs, g.architecture, spec.fp32_tflops if spec else 0.0, g.compute_capability >= (6, 1))
    cal = rig.calibration
    return rate / cal.scale_for(g.uuid) if cal is not None else rate


def _with_counts(base: PlanSettings, devices: tuple[int, ...], counts: list[int]) -> PlanSettings:
    ngl = sum(counts)
    return base.with_(devices=devices, gpulayers=ngl, tensor_split=tuple(float(c) for c in counts) if ngl else None)


def _gpus_fit(p: Plan) -> bool:
    return all(d.fits for d in p.gpus)


def _fill(ev: _Evaluator, base: PlanSettings, devices: tuple[int, ...], polish_within: int | None = None) -> tuple[list[int], Plan]:
    """Greedy: fastest GPU first, each given as many layers as fit next to the others."""
    model = ev.model
    n = len(devices)
    total = model.n_layer + 1
    counts = [0] * n
    gpus = [ev.rig.gpus[i] for i in devices]
    order = sorted(range(n), key=lambda i: -_gpu_speed(gpus[i], ev.rig))
    for i in order:
        room = total - sum(counts)
        lo, hi = 0, room  # lo fits (0 always "fits" for this device); find the largest fitting
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial = counts[:]
            trial[i] = mid
            if _gpus_fit(ev.plan(_with_counts(base, devices, trial))):
                lo = mid
            else:
                hi = mid - 1
        counts[i] = lo
    if polish_within is not None and total - sum(counts) > polish_within:
        return counts, ev.plan(_with_counts(base, devices, counts))
    return _polish(ev, base, devices, counts, order)


def _polish(ev: _Evaluator, base: PlanSettings, devices, counts: list[int], order: list[int]):
    """Filling a card first gives it the output layer; once later cards take that over, room frees
    up. Add layers where they now fit and move layers from slower to faster cards while that helps."""
    total = ev.model.n_layer + 1
    best = ev.plan(_with_counts(base, devices, counts))
    for _ in range(4 * len(counts) + 8):
        improved = False
        for i in order:
            if sum(counts) < total:
                trial = counts[:]
                trial[i] += 1
                p = ev.plan(_with_counts(base, devices, trial))
                if _gpus_fit(p):
                    counts, best, improved = trial, p, True
        if sum(counts) < total and not improved:
            # A full card blocks the shift that one more layer causes: give the new layer to a
            # roomy card and let it also take one from a full card.
            roomy = sorted(range(len(counts)), key=lambda k: -best.gpus[k].headroom_bytes)[:2]
            for k in roomy:
                for j in range(len(counts)):
                    if j == k or counts[j] == 0:
                        continue
                    trial = counts[:]
                    trial[k] += 2
                    trial[j] -= 1
                    p = ev.plan(_with_counts(base, devices, trial))
                    if _gpus_fit(p):
                        counts, best, improved = trial, p, True
                        break
                if improved:
                    break
            if not improved:
                # The last layer can switch on pipeline parallelism, which grows every GPU's
                # compute buffer at once: the roomiest card takes a layer from every other card.
                k = roomy[0]
                trial = [c - 1 if j != k and c > 0 else c for j, c in enumerate(counts)]
                trial[k] += 1 + sum(counts) - sum(trial)
                p = ev.plan(_with_counts(base, devices, trial))
                if _gpus_fit(p):
                    counts, best, improved = trial, p, True
        for a, i in enumerate(order):  # faster card i takes one from a slower card j
            for j in order[a + 1:]:
                if counts[j] == 0:
                    continue
                trial = counts[:]
                trial[i] += 1
                trial[j] -= 1
                p = ev.plan(_with_counts(base, devices, trial))
                if _gpus_fit(p) and p.predicted_tokens_per_s > best.predicted_tokens_per_s * 1.0001:
                    counts, best, improved = trial, p, True
        if not improved:
            break
    return counts, best


def _drop_empty(devices: tuple[int, ...], counts: list[int]) -> tuple[tuple[int, ...], list[int]]:
    keep = [k for k, c in enumerate(counts) if c > 0]
    return tuple(devices[k] for k in keep), [counts[k] for k in keep]


def _fastest(ev: _Evaluator, base: PlanSettings) -> tuple[PlanSettings, Plan]:
    rig, model = ev.rig, ev.model
    devices = tuple(rig.gpus.index(g) for g in selected_gpus(rig, base))
    cpu_only = base.with_(devices=(), gpulayers=0, tensor_split=None, moecpu=0)
    fitting: list[tuple[PlanSettings, Plan]] = []
    first = ev.plan(cpu_only)
    if not devices:
        return cpu_only, first

    def consider(s: PlanSettings, p: Plan):
        if _gpus_fit(p):
            fitting.append((s, p))

    consider(cpu_only, first)
    candidates = [devices]
    # Leaving the slowest GPUs out can pay when the rest hold the whole model.
    by_speed = sorted(devices, key=lambda i: _gpu_speed(rig.gpus[i], rig))
    for k in range(1, len(devices)):
        drop = set(by_speed[:k])
        candidates.append(tuple(d for d in devices if d not in drop))
    for cand in candidates:
        counts, p = _fill(ev, base.with_(moecpu=0), cand)
        full = sum(counts) == model.n_layer + 1
        d2, c2 = _drop_empty(cand, counts)
        s = _with_counts(base.with_(moecpu=0), d2, c2) if c2 else cpu_only
        consider(s, ev.plan(s) if c2 != counts else p)
        if not full:
            if model.is_moe and cand == devices:
                for s2, p2 in [*_moe_candidates(ev, base, cand, counts), *_expert_candidates(ev, base, cand, counts)]:
                    consider(s2, p2)
            break  # fewer GPUs can only hold less
    # The ranking above is by memory speed; another PC's card also pays the network on every token, so
    # try the cluster without each other PC, and this PC's devices alone.
    nodes = list(dict.fromkeys(rig.gpus[d].node for d in devices if rig.gpus[d].is_remote))
    without = [tuple(d for d in devices if rig.gpus[d].node != a) for a in nodes]
    without.append(tuple(d for d in devices if not rig.gpus[d].is_remote))
    for cand in dict.fromkeys(c for c in without if c and c not in candidates):
        counts, _ = _fill(ev, base.with_(moecpu=0), cand)
        d2, c2 = _drop_empty(cand, counts)
        if c2:
            s = _with_counts(base.with_(moecpu=0), d2, c2)
            consider(s, ev.plan(s))
    if not fitting:
        return cpu_only, first
    return _pick(ev, fitting)


def _pick(ev: _Evaluator, fitting: list[tuple[PlanSettings, Plan]]) -> tuple[PlanSettings, Plan]:
    """The fastest candidate, unless a rival is within the speed model's noise: the typical
    held-out error of the plan's regime (planner/speed.py noise). Then the one that stays faster
    as the context fills wins, and the plan says the candidates were within noise."""
    ranked, seen = [], set()
    for s, p in sorted(fitting, key=lambda sp: -sp[1].predicted_tokens_per_s):
        key = (s.devices, s.gpulayers, s.tensor_split, s.moecpu)  # one card alone is found from several sets
        if key not in seen:  # the same plan twice is no rival of itself
            seen.add(key)
            ranked.append((s, p))
    best_s, best_p = ranked[0]
    margin = noise(best_p.speed_regime)
    close = [sp for sp in ranked[1:] if sp[1].speed_regime and
             best_p.predicted_tokens_per_s <= sp[1].predicted_tokens_per_s * (1 + margin)]
    if not close:
        return best_s, best_p
    pick_s, pick_p = max([ranked[0], *close], key=lambda sp: sp[1].tokens_per_s_full)
    other = best_p if pick_p is not best_p else max(close, key=lambda sp: sp[1].predicted_tokens_per_s)[1]
    ev.rivals[id(pick_p)] = (other.predicted_tokens_per_s, margin, _describe(other))
    return pick_s, pick_p


def _describe(p: Plan) -> str:
    gpus = [d.name for d in p.gpus if d.layers]
    if not gpus:
        return "the CPU alone"
    extra = f" with the experts of {p.settings.moecpu} blocks in RAM" if p.settings.moecpu else ""
    return f"{p.gpulayers} layers on {', '.join(gpus)}{extra}"


def smallest_from(ok, start: int, top: int) -> int | None:
    """The smallest k in 0..top with ok(k), for an ok that stays true once true, searched from a guess: steps
    of 1, 2, 4 ... away from `start` until the answer is bracketed, then bisection. None when ok(top) is false."""
    start = min(max(start, 0), top)
    if ok(start):
        hi, step = start, 1
        while hi > 0:
            lo = max(0, hi - step)
            if not ok(lo):
                break
            hi, step = lo, step * 2
        else:
            return 0
        lo += 1
    else:
        lo, step = start, 1
        while True:
            if lo >= top:
                return None
            hi = min(top, lo + step)
            if ok(hi):
                lo += 1
                break
            lo, step = hi, step * 2
    while lo < hi:  # ok(hi), and not ok(lo - 1)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi


def _moe_candidates(ev: _Evaluator, base: PlanSettings, devices: tuple[int, ...], hint: list[int] | None = None):
    """Every layer on GPUs with the experts of the first N blocks in RAM: smallest N that fits. The fills are
    the cost (each a search of its own), so the search starts where memory says the answer lies: `hint` (the
    whole-layer fill's counts) leaves some layers off the GPUs, and each block whose experts go to RAM frees
    its experts' bytes; from that estimate it walks down while N fits, or gallops up until it does (fitting
    grows with N, so this finds the same smallest N as a bisection of 0..n, in a few fills instead of six)."""
    model = ev.model
    n = model.n_layer
    tried: dict[int, tuple] = {}

    def fill(k: int):
        if k not in tried:
            # polishing only matters near the boundary; far from it the greedy answer decides
            counts, p = _fill(ev, base.with_(moecpu=k), devices, polish_within=2)
            tried[k] = (sum(counts) == n + 1, counts, p)
        return tried[k]

    est = n // 2
    experts = sum(layer.expert_bytes for layer in model.layers) / max(1, n)
    if hint and experts:
        missing = n + 1 - sum(hint)
        est = min(n, max(0, -(-missing * (model.layers[0].nbytes) // max(1, int(experts)))))
    k = smallest_from(lambda k: fill(k)[0], est, n)
    if k is None:
        return []
    _, counts, p = fill(k)
    n_moe = k
    d2, c2 = _drop_empty(devices, counts)
    s = _with_counts(base.with_(moecpu=n_moe), d2, c2)
    return [(s, ev.plan(s))]


def _expert_candidates(ev: _Evaluator, base: PlanSettings, devices: tuple[int, ...], hint: list[int] | None = None):
    """Every layer's attention and shared weights on the GPUs, and each GPU keeping the experts of as many of
    its own layers as fit, the rest of the experts in RAM (one override naming those blocks). --moecpu frees
    experts only from the first blocks, which sit on the first cards; here every card, fast or slow, small or
    big, is filled with experts up to its own memory, the fastest card first. Experts stay with their layer's
    card (no extra hop between cards per layer). Layer splits tried: the greedy one that gives the fastest
    cards the most layers, one in proportion to each card's memory (which leaves each card room for experts
    in step with its size), and `hint` (the whole-layer fill's counts) scaled up to every layer."""
    model = ev.model
    if base.overrides or base.moecpu:
        return []  # the user's own overrides decide where tensors go
    n = model.n_layer
    every = experts_in_ram_overrides(range(n))
    lean = base.with_(moecpu=0, overrides=every)
    counts, p = _fill(ev, lean, devices, polish_within=2)
    if sum(counts) < n + 1:
        return []  # even without experts the layers do not all fit on the GPUs
    splits = [counts]
    usable = [max(1, ev.rig.gpus[i].free_bytes) for i in devices]
    prop = [int((n + 1) * u / sum(usable)) for u in usable]
    prop[max(range(len(prop)), key=usable.__getitem__)] += n + 1 - sum(prop)
    if hint and sum(hint) and len(hint) == len(devices):
        scaled = [int((n + 1) * c / sum(hint)) for c in hint]
        scaled[max(range(len(scaled)), key=hint.__getitem__)] += n + 1 - sum(scaled)
        splits.append(scaled)
    splits.append(prop)
    splits = list(dict.fromkeys(tuple(x) for x in splits if list(x) != counts or x is counts))
    gpus = [ev.rig.gpus[i] for i in devices]
    order = sorted(range(len(devices)), key=lambda k: -_gpu_speed(gpus[k], ev.rig))
    out = []
    for split in splits:
        d2, c2 = _drop_empty(devices, split)
        trial_s = _with_counts(lean, d2, c2)
        first = ev.plan(trial_s)
        if not _gpus_fit(first):
            continue
        blocks = {k: [il for il in range(n) if first.assign[il] == k] for k in range(len(d2))}
        ram = set(range(n))
        speed_order = [k for k in order if k < len(d2)] if len(d2) == len(devices) else range(len(d2))
        for k in speed_order:  # each card's own experts: taking them onto one card changes only that card
            lo, hi = 0, len(blocks[k])
            while lo < hi:
                mid = (lo + hi + 1) // 2
                s = trial_s.with_(overrides=experts_in_ram_overrides(ram - set(blocks[k][:mid])))
                if _gpus_fit(ev.plan(s)):
                    lo = mid
                else:
                    hi = mid - 1
            ram -= set(blocks[k][:lo])
        s = trial_s.with_(overrides=experts_in_ram_overrides(ram))
        out.append((s, ev.plan(s)))
    return out


HEADROOM_SPEED_COST = 0.10  # "most headroom" may give up this share of the fastest speed for room on the cards


def _room(p: Plan) -> tuple[float, float]:
    """(the smallest headroom as a share of its card's usable memory, the smallest headroom in bytes) over the
    cards that hold something: what "most headroom" raises, the tightest card first."""
    used = [d for d in p.gpus if d.layers or d.kv_bytes]
    if not used:
        return (1.0, float("inf"))
    return (min(d.headroom_bytes / max(1, d.usable_bytes) for d in used), min(d.headroom_bytes for d in used))


def _headroom(ev: _Evaluator, s: PlanSettings, p: Plan) -> tuple[PlanSettings, Plan]:
    """From the fastest fit, take layers off the tightest card, one at a time, to a roomier card or to the CPU,
    whichever leaves the most room on the tightest card, while the plan stays within HEADROOM_SPEED_COST of
    the fastest: the card that ran out of memory gets real room for a small speed cost."""
    if not s.devices or not s.tensor_split:
        return s, p
    floor = p.predicted_tokens_per_s * (1 - HEADROOM_SPEED_COST)
    counts = [int(x) for x in s.tensor_split]
    for _ in range(2 * sum(counts) + 2):
        frac = [d.headroom_bytes / max(1, d.usable_bytes) for d in p.gpus]
        tight = min((k for k in range(len(counts)) if counts[k] > 0), key=frac.__getitem__, default=None)
        if tight is None:
            break
        best = None
        for j in [*range(len(counts)), None]:  # None: the layer goes to the CPU
            if j == tight:
                continue
            trial = counts[:]
            trial[tight] -= 1
            if j is not None:
                trial[j] += 1
            s2 = _with_counts(s, s.devices, trial)
            p2 = ev.plan(s2)
            if _gpus_fit(p2) and p2.predicted_tokens_per_s >= floor and _room(p2) > _room(p) and (
                    best is None or _room(p2) > _room(best[2])):
                best = (trial, s2, p2)
        if best is None:
            break
        counts, s, p = best
    d2, c2 = _drop_empty(s.devices, counts)
    if c2 and len(c2) < len(counts):  # a card left with no layers would still pay a CUDA context
        s = _with_counts(s, d2, c2)
        p = ev.plan(s)
    return s, p


def _longest_context(ev: _Evaluator, base: PlanSettings, fast_s: PlanSettings, fast_p: Plan):
    """The longest context that fits at all (the model's trained context at most), with the fastest plan at
    that context: fewer layers on the GPUs is the price, and the speed shown says what it costs."""
    model = ev.model
    # the model's trained context, never past what the engine accepts (koboldcpp: 262,144)
    limit = min(model.n_ctx_train or 131072, CONTEXT_MAX.get(base.backend, min(CONTEXT_MAX.values())))
    lo, hi = max(256, base.context // 256 * 256) + 256, max(256, limit // 256 * 256)
    best = (fast_s, fast_p)
    while lo <= hi:
        mid = max(lo, min((lo + hi) // 512 * 256, hi))
        s, p = _fastest(ev, base.with_(context=mid))
        if p.fits:
            best = (s, p)
            lo = mid + 256
        else:
            hi = mid - 256
    return best


def auto_fit(model: ModelInfo, rig: Rig, base: PlanSettings, objective: str = "fastest") -> FitResult:
    return auto_fits(model, rig, base, (objective,))[0]


def auto_fits(model: ModelInfo, rig: Rig, base: PlanSettings, objectives=("fastest",)) -> list[FitResult]:
    """Several objectives from one search: each starts from the same fastest plan, found once (the
    advisor asks for the fastest and the most-headroom plan of every row)."""
    import dataclasses

    ev = _Evaluator(model, rig)
    base = base.with_(context=pad(base.context, 256) if base.context % 256 else base.context)
    s0, p0 = _fastest(ev, base)
    chosen = {rig.gpus.index(g) for g in selected_gpus(rig, base)}  # the cards the user left in
    out, given = [], set()
    for objective in objectives:
        s, p = s0, p0
        if objective == "headroom":
            s, p = _headroom(ev, s0, p0)
        elif objective == "context":
            s, p = _longest_context(ev, base, s0, p0)
        if id(p) in given:  # the same plan for two objectives: each gets its own explanation
            p = dataclasses.replace(p, devices=[dataclasses.replace(d) for d in p.devices], explanation=[])
        given.add(id(p))
        p.explanation = explain(p, rig, objective, ev.rivals.get(id(p)), chosen)
        if objective == "context":
            trained = f" (the model was trained on {model.n_ctx_train:,})" if model.n_ctx_train else ""
            p.explanation.insert(0, f"Context: {s.context:,} tokens — the longest that fits{trained}.")
        out.append(FitResult(p, s, objective, ev.count))
    return out


def explain(p: Plan, rig: Rig, objective: str, rival: tuple[float, float, str] | None = None,
            chosen: set[int] | None = None) -> list[str]:
    """Why each device holds what it holds; `chosen`: the devices the user left in (a card the user unticked is
    not one auto-fit "left out")."""
    lines = []
    gib = 1 << 30
    ranked = sorted(p.gpus, key=lambda d: -_gpu_speed(rig.gpus[d.gpu_index], rig))
    rank = {id(d): k for k, d in enumerate(ranked)}
    measured = rig.calibration is not None
    for d in p.gpus:
        g = rig.gpus[d.gpu_index]
        span = f"blocks {d.first_layer}-{min(d.last_layer, p.n_layer - 1)}" if d.first_layer is not None else "no layers"
        out = " + output layer" if d.has_output else ""
        if measured:
            why = ("fastest as measured on this PC, filled first" if rank[id(d)] == 0 else
                   f"#{rank[id(d)] + 1} by the speed measured on this PC, takes what the faster cards could not")
        else:
            why = ("fastest memory, filled first" if rank[id(d)] == 0 else
                   f"#{rank[id(d)] + 1} by memory speed ({g.bandwidth_gbs:.0f} GB/s), takes what the faster cards could not")
        if objective == "headroom":
            why = (f"{d.headroom_bytes / (1 << 20):,.0f} MiB ({d.headroom_bytes / max(1, d.usable_bytes):.0%}) kept "
                   "free: layers moved off the tightest card for the most room")
        lines.append(f"{d.name}: {d.layers} layers ({span}{out}), {d.total_bytes / gib:.2f} of "
                     f"{d.usable_bytes / gib:.2f} GiB usable — {why}.")
    if objective == "headroom":
        lines.append(f"Most headroom: up to {HEADROOM_SPEED_COST:.0%} of the fastest speed traded for free memory "
                     "on the tightest card.")
    left = [i for i, g in enumerate(rig.gpus) if i not in {d.gpu_index for d in p.gpus}]
    for i in left:
        if chosen is not None and i not in chosen:
            continue  # the user's own choice, shown unticked on the Hardware page: nothing for auto-fit to explain
        lines.append(f"{rig.gpus[i].short_name}: left out — the model runs faster without it"
                     + (" (it would only add a slow hop)." if p.gpulayers == p.n_layer + 1 else "."))
    if rival:
        tps, margin, what = rival
        lines.append(f"Within noise: {what} predicts {tps:.1f} tokens/s against {p.predicted_tokens_per_s:.1f}, "
                     f"less apart than the speed model's typical error (±{margin * 100:.0f} %); this split "
                     f"stays faster as the context fills ({p.tokens_per_s_full:.1f} tokens/s at full context).")
    cpu = p.cpu
    if cpu.layers or cpu.expert_bytes_on_cpu:
        extra = f", experts of the first {p.settings.moecpu} blocks" if p.settings.moecpu else ""
        blocks = experts_in_ram_blocks(p.settings.overrides)
        if blocks:
            extra += (f", the experts of {len(blocks)} blocks ({', '.join(map(str, blocks))}): every card keeps the "
                      "experts of as many of its own layers as fit, the rest stay here (--overridetensors)")
        lines.append(f"CPU / RAM: {cpu.layers} layers{extra} ({cpu.weights_bytes / gib:.2f} GiB) that fit on no GPU.")
    else:
        lines.append("CPU / RAM: only the input embeddings — every layer runs on a GPU.")
    return lines
