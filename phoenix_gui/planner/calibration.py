"""What tuning measured on one PC, as a pure input to the planner.

The speed model (speed.py) predicts the time of a token device by device. A calibration scales each
device's part by a factor learned on this PC (1.0 = the model was right) and replaces the cost of a hop
between devices; it also adds the memory the engine was seen to need beyond the plan on each GPU.

    time per token = base + sum over devices of scale[device] x model time[device]
                   + hop scale x the model's cost of moving between devices

The factors are fitted by least squares on measured token times, pulled toward the model (ridge, as a
prior with its own uncertainty), so a device that few runs exercised stays near what the model says. The planner applies a calibration found
in rig.extra["calibration"] (see with_calibration); nothing here reads or writes files.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..hardware.rig import MIB, GpuInfo, Rig
from .speed import token_seconds

NOISE = 0.01  # relative noise of one measured run (fixed prompt and token counts)
PRIOR_SD = 0.5  # how far off the speed model may be for one device, as a factor
# the hops are a few tenths of a millisecond of a token, within the noise of most runs: the runs rarely
# pin them down, and a prior as narrow as the devices' would hold a wrong hop cost that then leaks into
# the device costs (the two are nearly collinear), so it is wider
HOP_PRIOR_SD = 1.0
CPU = "cpu"


@dataclass
class Calibration:
    gpu_scale: dict[str, float] = field(default_factory=dict)  # GPU UUID -> factor on the model's time there
    cpu_scale: float = 1.0
    hop_scale: float = 1.0  # factor on the model's cost of the hops between devices
    mem_extra_mib: dict[str, float] = field(default_factory=dict)  # GPU UUID -> MiB beyond the plan
    runs: int = 0
    created: float = field(default_factory=time.time)
    key: dict = field(default_factory=dict)  # GPU UUIDs, driver, engine and version it was measured with
    model: str = ""  # the model it was tuned with
    per_layer_ms: dict[str, float] = field(default_factory=dict)  # device name -> ms per layer (that model)

    def scale_for(self, uuid: str | None) -> float:
        return self.cpu_scale if uuid is None else self.gpu_scale.get(uuid, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "Calibration":
        """Raises ValueError (one sentence) for anything that is not a calibration."""
        try:
            c = Calibration(
                gpu_scale={str(k): float(v) for k, v in dict(d.get("gpu_scale", {})).items()},
                cpu_scale=float(d.get("cpu_scale", 1.0)),
                hop_scale=float(d.get("hop_scale", 1.0)),
                mem_extra_mib={str(k): float(v) for k, v in dict(d.get("mem_extra_mib", {})).items()},
                runs=int(d.get("runs", 0)), created=float(d.get("created", 0.0)), key=dict(d.get("key", {})),
                model=str(d.get("model", "")),
                per_layer_ms={str(k): float(v) for k, v in dict(d.get("per_layer_ms", {})).items()})
        except (TypeError, ValueError, AttributeError):
            raise ValueError("This file is not a Phoenix calibration.") from None
        factors = [c.cpu_scale, *c.gpu_scale.values()]
        if not all(np.isfinite(x) and 0.01 <= x <= 100 for x in factors) or not (np.isfinite(c.hop_scale)
                                                                                  and 0 <= c.hop_scale <= 100):
            raise ValueError("This calibration holds impossible numbers (a factor outside 0.01-100).")
        return c


def with_calibration(rig: Rig, cal: Calibration | None) -> Rig:
    """The rig the planner plans on with this calibration applied (None: without one)."""
    extra = {k: v for k, v in rig.extra.items() if k != "calibration"}
    if cal is not None:
        extra["calibration"] = cal
    return replace(rig, extra=extra)


def calibration_of(rig: Rig) -> Calibration | None:
    cal = rig.extra.get("calibration") if isinstance(rig.extra, dict) else None
    return cal if isinstance(cal, Calibration) else None


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
    cal = calibration_of(rig)
    if cal is None:
        return model_tps
    base, times, hops = device_times(inputs)
    uuids = [g.uuid for g in gpus] + [None]
    t = base + sum(cal.scale_for(u) * x for u, x in zip(uuids, times)) + cal.hop_scale * hops
    return 1.0 / t if t > 0 else model_tps


def extra_bytes(rig: Rig, gpu: GpuInfo) -> int:
    """Memory the engine was seen to need on this GPU beyond the plan (0 without a calibration)."""
    cal = calibration_of(rig)
    return int(max(0.0, cal.mem_extra_mib.get(gpu.uuid, 0.0)) * MIB) if cal else 0


# --- learning ---

@dataclass
class Run:
    """One measured run: the model's parts of the token time for its plan, and the measured time."""
    times: list[float]  # seconds on each GPU of the rig (rig order, 0 if unused), then the CPU
    hops: float  # seconds the model gives the hops between devices
    base: float
    seconds_per_token: float


def fit(runs: list[Run], uuids: list[str], prior: Calibration | None = None, noise: float = NOISE,
        prior_sd: float = PRIOR_SD) -> Calibration:
    """Least squares on relative error, pulled toward the prior (default: the speed model as it is) as
    much as the prior's uncertainty (prior_sd, in factor units) against the runs' noise (relative)
    warrants: a factor the runs pin down follows them, one they barely touch stays near the model."""
    prior = prior or Calibration()
    n = len(uuids) + 2  # GPUs, CPU, hops
    theta0 = np.array([prior.scale_for(u) for u in uuids] + [prior.cpu_scale, prior.hop_scale])
    if not runs:
        return replace(prior)
    X = np.array([list(r.times) + [r.hops] for r in runs], dtype=float)
    y = np.array([r.seconds_per_token - r.base for r in runs])
    w = 1.0 / np.array([r.seconds_per_token for r in runs]) ** 2
    A = X.T @ (w[:, None] * X) + prior_information(len(uuids), noise, prior_sd)
    b = X.T @ (w * (y - X @ theta0))
    theta = np.clip(theta0 + np.linalg.solve(A, b), 0.02, 50.0)
    return replace(prior, gpu_scale={u: float(theta[i]) for i, u in enumerate(uuids)}, cpu_scale=float(theta[n - 2]),
                   hop_scale=float(theta[-1]), runs=len(runs), created=time.time())


def prior_information(n_gpus: int, noise: float = NOISE, prior_sd: float = PRIOR_SD) -> np.ndarray:
    """What the prior is worth in the fit, in runs' units (factors GPUs, CPU, hop): the runs' relative
    noise over the prior's spread, squared. tuning.design plans against the same matrix."""
    sd = np.array([prior_sd] * (n_gpus + 1) + [HOP_PRIOR_SD])
    return np.diag((max(noise, 1e-4) / sd) ** 2)


def memory_corrections(pairs: list[tuple[str, int, int]]) -> dict[str, float]:
    """(GPU UUID, predicted bytes, logged bytes) per device and run -> MiB the engine needed beyond the
    plan: the largest excess seen (a GPU the plan over-estimates gets a negative, unused, figure)."""
    out: dict[str, float] = {}
    for uuid, predicted, actual in pairs:
        extra = (actual - predicted) / MIB
        out[uuid] = max(out.get(uuid, extra), extra)
    return {u: round(v, 1) for u, v in out.items()}
