"""What tuning measured on one PC, as a pure input to the planner.

The speed model (speed.py) predicts the time of a token device by device. A calibration scales each
device's part by a factor learned on this PC (1.0 = the model was right) and replaces the cost of a hop
between devices; it also adds the memory the engine was seen to need beyond the plan on each GPU.

    time per token = base + sum over devices of scale[device] x model time[device]
                   + hop scale x the model's cost of moving between devices

The factors are fitted by least squares on measured token times, pulled toward the model (ridge, as a
prior with its own uncertainty), so a device that few runs exercised stays near what the model says.
The planner applies the calibration a rig carries (Rig.calibration; the record and its checks are
hardware/calibration.py; see with_calibration); nothing here reads or writes files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..hardware.calibration import Calibration
from ..hardware.rig import MIB, GpuInfo, Rig
from .speed import token_seconds

NOISE = 0.01  # relative noise of one measured run (fixed prompt and token counts)
PRIOR_SD = 0.5  # how far off the speed model may be for one device, as a factor
# the hops are a few tenths of a millisecond of a token, within the noise of most runs: the runs rarely
# pin them down, and a prior as narrow as the devices' would hold a wrong hop cost that then leaks into
# the device costs (the two are nearly collinear), so it is wider
HOP_PRIOR_SD = 1.0
CPU = "cpu"


def with_calibration(rig: Rig, cal: Calibration | None) -> Rig:
    """The rig the planner plans on with this calibration applied (None: without one)."""
    return replace(rig, calibration=cal)


# --- the planner's hooks (plan.py) ---

def device_times(inputs) -> tuple[float, list[float], float]:
    """(base seconds, the model's seconds per token on each device alone, the rest: its hop costs),
    from the speed model's inputs for one plan (speed.SpeedInputs)."""

    def alone(ds):
        return token_seconds(replace(inputs, devices=ds, hops=0))

    base = alone([])
    times = [alone([d]) - base if (d.bytes_per_token > 0 or d.layers > 0) else 0.0 for d in inputs.devices]
    return base, times, max(0.0, token_seconds(inputs) - base - sum(times))


def calibrated_tokens_per_second(rig: Rig, gpus: list[GpuInfo], inputs, model_tps: float) -> float:
    """The speed model's prediction with this PC's calibration, if the rig carries one. The inputs'
    devices are one per GPU in `gpus`, then the CPU."""
    cal = rig.calibration
    if cal is None:
        return model_tps
    base, times, hops = device_times(inputs)
    uuids = [g.uuid for g in gpus] + [None]
    t = base + sum(cal.scale_for(u) * x for u, x in zip(uuids, times)) + cal.hop_scale * hops
    return 1.0 / t if t > 0 else model_tps


def extra_bytes(rig: Rig, gpu: GpuInfo) -> int:
    """Memory the engine was seen to need on this GPU beyond the plan (0 without a calibration)."""
    cal = rig.calibration
    return int(max(0.0, cal.mem_extra_mib.get(gpu.uuid, 0.0)) * MIB) if cal else 0


# --- learning ---

@dataclass
class Run:
    """One measured run: the model's parts of the token time for its plan, and the measured time."""
    times: list[float]  # seconds on each GPU of the rig (rig order, 0 if unused), then the CPU
    hops: float  # seconds the model gives the hops between devices
    base: float  # the fixed cost of a token (no device's): the same in a slice as in the whole model
    seconds_per_token: float
    output: float = 0.0  # the part of times[holder] that is the output layer
    holder: int | None = None  # index into times of the device that holds the output layer
    slice: bool = False  # a slice run (the model's first layers alone on one device, model/slice.py)


# The terms a slice run shares with whole-model runs, explicit in the fit so that a slice's time is not
# read as its card's time per layer: the fixed cost per token (a slice of 8 layers on a fast card spends
# a tenth of its token there), the output layer (a quarter of such a slice's time, on the slice's card;
# in the whole model on whichever card holds it), and what a layer costs in a slice against the whole
# model (1 when the kernels behave alike). Their priors, as a factor's spread:
BASE_PRIOR_SD, OUTPUT_PRIOR_SD, SLICE_PRIOR_SD = 0.1, 0.1, 0.05
# what a factor may be: outside, the fit is not measuring the PC but a gap in the runs (fit_terms)
BOUNDS = {"device": (0.02, 50.0), "hop": (0.02, 50.0), "base": (0.1, 10.0), "output": (0.1, 10.0), "slice": (0.5, 2.0)}


@dataclass
class Fit:
    """A fitted calibration, the explicit shared terms, and the factors held back at the prior because the
    runs put them on a bound (fit_terms)."""
    cal: Calibration
    base: float = 1.0  # factor on the fixed cost per token
    output: float = 1.0  # factor on the output layer's time, on its card's factor
    slice: float = 1.0  # a layer's time in a slice over its time in the whole model
    held: list[tuple[str, str, float]] = field(default_factory=list)  # (term, "floor"/"ceiling", unbounded value)


def fit(runs: list[Run], uuids: list[str], prior: Calibration | None = None, noise: float = NOISE,
        prior_sd: float = PRIOR_SD) -> Calibration:
    return fit_terms(runs, uuids, prior, noise, prior_sd).cal


def fit_terms(runs: list[Run], uuids: list[str], prior: Calibration | None = None, noise: float = NOISE,
              prior_sd: float = PRIOR_SD) -> Fit:
    """Least squares on relative error, pulled toward the prior (default: the speed model as it is) as
    much as the prior's uncertainty (prior_sd, in factor units) against the runs' noise (relative)
    warrants: a factor the runs pin down follows them, one they barely touch stays near the model.

        time = base factor x base + sum over devices of factor x (its layers' time x (slice factor in a
               slice run)) + output factor x the holder's factor x the output layer's time + hop factor x hops

    solved by Gauss-Newton (the output and slice terms multiply a device's factor). A factor whose best
    value lies outside BOUNDS is held and the rest refitted, and reported in Fit.held: a shared term (the
    fixed cost, the output layer, the slice, the hops) first, at the bound it crossed, since the runs do say
    which way it is off and it is nobody's speed; a device's factor only when that does not bring it back
    in bounds, and then at the prior (a device's factor clamped at a bound is a wrong speed that looks
    measured)."""
    prior = prior or Calibration()
    n = len(uuids)
    names = [f"gpu:{u}" for u in uuids] + ["cpu", "hop", "base", "output", "slice"]
    kinds = ["device"] * (n + 1) + ["hop", "base", "output", "slice"]
    theta0 = np.array([prior.scale_for(u) for u in uuids] + [prior.cpu_scale, prior.hop_scale, 1.0, 1.0, 1.0])
    if not runs:
        return Fit(replace(prior))
    sd = np.array([prior_sd] * (n + 1) + [HOP_PRIOR_SD, BASE_PRIOR_SD, OUTPUT_PRIOR_SD, SLICE_PRIOR_SD])
    P = np.diag((max(noise, 1e-4) / sd) ** 2)
    y = np.array([r.seconds_per_token for r in runs])
    w = 1.0 / y ** 2
    held: dict[int, tuple[str, float]] = {}
    at = theta0.copy()  # where a held factor stays: the prior, or a shared term's crossed bound
    for _ in range(n + 5):  # each pass holds at least one more factor, or ends
        theta = _solve(runs, n, at, P, y, w, set(held))
        out = {i: ("floor" if theta[i] < BOUNDS[kinds[i]][0] else "ceiling", float(theta[i]))
               for i in range(len(theta)) if i not in held and not BOUNDS[kinds[i]][0] <= theta[i] <= BOUNDS[kinds[i]][1]}
        if not out:
            break
        shared = [i for i in out if kinds[i] != "device"]
        worst = max(shared or out, key=lambda i: abs(np.log(max(out[i][1], 1e-6) / theta0[i])))  # the furthest first
        held[worst] = out[worst]
        if kinds[worst] != "device":
            at[worst] = BOUNDS[kinds[worst]][0 if out[worst][0] == "floor" else 1]
    theta = np.array([at[i] if i in held else min(max(theta[i], BOUNDS[kinds[i]][0]), BOUNDS[kinds[i]][1])
                      for i in range(len(theta))])
    cal = replace(prior, gpu_scale={u: float(theta[i]) for i, u in enumerate(uuids)}, cpu_scale=float(theta[n]),
                  hop_scale=float(theta[n + 1]), runs=len(runs), created=time.time())
    return Fit(cal, float(theta[n + 2]), float(theta[n + 3]), float(theta[n + 4]),
               [(names[i], side, value) for i, (side, value) in held.items()])


def _solve(runs: list[Run], n: int, theta0: np.ndarray, P: np.ndarray, y: np.ndarray, w: np.ndarray,
           held: set[int], steps: int = 8) -> np.ndarray:
    """Gauss-Newton from the prior; the factors in `held` stay at theta0."""
    theta = theta0.copy()
    free = [i for i in range(len(theta)) if i not in held]
    for _ in range(steps):
        J = np.zeros((len(runs), len(theta)))
        pred = np.zeros(len(runs))
        s, hop, base, out, sl = theta[:n + 1], theta[n + 1], theta[n + 2], theta[n + 3], theta[n + 4]
        for k, r in enumerate(runs):
            layers = np.array(r.times, dtype=float)
            o = r.output if r.holder is not None else 0.0
            if r.holder is not None:
                layers[r.holder] -= o
            c = sl if r.slice else 1.0
            J[k, :n + 1] = c * layers
            if r.holder is not None:
                J[k, r.holder] += out * o
                J[k, n + 3] = s[r.holder] * o
            J[k, n + 1], J[k, n + 2] = r.hops, r.base
            J[k, n + 4] = float(s @ layers) if r.slice else 0.0
            pred[k] = base * r.base + c * float(s @ layers) + (out * s[r.holder] * o if r.holder is not None else 0.0) \
                + hop * r.hops
        Jf = J[:, free]
        A = Jf.T @ (w[:, None] * Jf) + P[np.ix_(free, free)]
        b = Jf.T @ (w * (y - pred)) - P[np.ix_(free, free)] @ (theta[free] - theta0[free])
        step = np.linalg.solve(A, b)
        theta[free] += step
        theta[free] = np.maximum(theta[free], 1e-6)  # a factor below zero has no meaning; the bounds judge it
        if np.max(np.abs(step)) < 1e-7:
            break
    return theta


def prior_information(n_gpus: int, noise: float = NOISE, prior_sd: float = PRIOR_SD) -> np.ndarray:
    """What the prior is worth in the fit, in runs' units (factors GPUs, CPU, hop): the runs' relative
    noise over the prior's spread, squared. tuning.design plans against the same matrix."""
    sd = np.array([prior_sd] * (n_gpus + 1) + [HOP_PRIOR_SD])
    return np.diag((max(noise, 1e-4) / sd) ** 2)


def memory_corrections(pairs: list[tuple[str, int, int]], uuids: list[str] = ()) -> dict[str, float]:
    """(GPU UUID, predicted bytes, logged bytes) per device and run -> MiB the engine needed beyond the
    plan: the largest excess seen (a GPU the plan over-estimates gets a negative, unused, figure). A card
    in `uuids` that no load logged (every run on it ran out of memory) gets the largest excess seen on
    another card: the same engine on the same PC, rather than none, under a winner planned to the brim."""
    out: dict[str, float] = {}
    for uuid, predicted, actual in pairs:
        extra = (actual - predicted) / MIB
        out[uuid] = max(out.get(uuid, extra), extra)
    seen = max(out.values(), default=0.0)
    for u in uuids:
        if u not in out and seen > 0:
            out[u] = seen
    return {u: round(v, 1) for u, v in out.items()}


def memory_spread(pairs: list[tuple[str, int, int]]) -> float:
    """The most a card's excess over the plan (MiB) varied between the runs: the noise of one load that the
    single per-card correction does not carry (recovery.measured_margin)."""
    seen: dict[str, list[float]] = {}
    for uuid, predicted, actual in pairs:
        seen.setdefault(uuid, []).append((actual - predicted) / MIB)
    return round(max((max(v) - min(v) for v in seen.values()), default=0.0), 1)

