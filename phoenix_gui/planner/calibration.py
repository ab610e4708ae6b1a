"""What tuning measured on one PC, as a pure input to the planner.

The speed model (speed.py) predicts the time of a token device by device. A calibration scales each
device's part by a factor learned on this PC (1.0 = the model was right) and replaces the cost of a hop
between devices; it also adds the memory the engine was seen to need beyond the plan on each GPU.

    time per token = base + sum over devices of scale[device] x model time[device] + hops x hop cost

The factors are fitted by least squares on measured token times, pulled toward the model (ridge), so a
device that few runs exercised stays near what the model says. The planner applies a calibration found
in rig.extra["calibration"] (see with_calibration); nothing here reads or writes files.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..hardware.rig import MIB, GpuInfo, Rig
from .speed import SpeedDevice, speed_constants, token_seconds

RIDGE = 0.02  # pull toward the model, relative to what the runs show about each factor
CPU = "cpu"


@dataclass
class Calibration:
    gpu_scale: dict[str, float] = field(default_factory=dict)  # GPU UUID -> factor on the model's time there
    cpu_scale: float = 1.0
    hop_ms: float | None = None  # None: the model's
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
                hop_ms=None if d.get("hop_ms") is None else float(d["hop_ms"]),
                mem_extra_mib={str(k): float(v) for k, v in dict(d.get("mem_extra_mib", {})).items()},
                runs=int(d.get("runs", 0)), created=float(d.get("created", 0.0)), key=dict(d.get("key", {})),
                model=str(d.get("model", "")),
                per_layer_ms={str(k): float(v) for k, v in dict(d.get("per_layer_ms", {})).items()})
        except (TypeError, ValueError, AttributeError):
            raise ValueError("This file is not a Phoenix calibration.") from None
        factors = [c.cpu_scale, *c.gpu_scale.values()]
        if not all(np.isfinite(x) and 0.01 <= x <= 100 for x in factors) or (c.hop_ms is not None and not 0 <= c.hop_ms < 1000):
            raise ValueError("This calibration holds impossible numbers (a factor outside 0.01-100 or a bad hop cost).")
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

def device_times(devices: list[SpeedDevice], file_type: str = "") -> tuple[float, list[float]]:
    """(base seconds, the model's seconds per token on each device alone), from the speed model."""
    c = speed_constants()
    base = token_seconds([], c, file_type)
    return base, [token_seconds([d], c, file_type) - base if (d.bytes_per_token > 0 or d.layers > 0) else 0.0
                  for d in devices]


def calibrated_tokens_per_second(rig: Rig, gpus: list[GpuInfo], devices: list[SpeedDevice], file_type: str,
                                 model_tps: float) -> float:
    """The speed model's prediction with this PC's calibration, if the rig carries one. `devices` are
    the speed model's devices: one per GPU in `gpus`, then the CPU."""
    cal = calibration_of(rig)
    if cal is None:
        return model_tps
    base, times = device_times(devices, file_type)
    active = sum(1 for d in devices if d.bytes_per_token > 0 or d.layers > 0)
    hop = (cal.hop_ms if cal.hop_ms is not None else speed_constants()["hop_ms"]) / 1000
    uuids = [g.uuid for g in gpus] + [None]
    t = base + sum(cal.scale_for(u) * x for u, x in zip(uuids, times)) + hop * max(0, active - 1)
    return 1.0 / t if t > 0 else model_tps


def extra_bytes(rig: Rig, gpu: GpuInfo) -> int:
    """Memory the engine was seen to need on this GPU beyond the plan (0 without a calibration)."""
    cal = calibration_of(rig)
    return int(max(0.0, cal.mem_extra_mib.get(gpu.uuid, 0.0)) * MIB) if cal else 0


# --- learning ---

@dataclass
class Run:
    """One measured run: the model's device times for its plan and the measured time per token."""
    times: list[float]  # seconds on each GPU of the rig (rig order, 0 if unused), then the CPU
    hops: int
    base: float
    seconds_per_token: float


def fit(runs: list[Run], uuids: list[str], prior: Calibration | None = None, ridge: float = RIDGE) -> Calibration:
    """Least squares on relative error, ridge toward the prior (default: the speed model as it is)."""
    prior = prior or Calibration()
    n = len(uuids) + 2  # GPUs, CPU, hop (seconds)
    theta0 = np.array([prior.scale_for(u) for u in uuids] + [prior.cpu_scale,
                      (prior.hop_ms if prior.hop_ms is not None else speed_constants()["hop_ms"]) / 1000])
    if not runs:
        return replace(prior)
    X = np.array([r.times + [float(r.hops)] for r in runs], dtype=float)
    y = np.array([r.seconds_per_token - r.base for r in runs])
    w = 1.0 / np.array([r.seconds_per_token for r in runs]) ** 2
    strength = (w[:, None] * X ** 2).mean(axis=0)
    pen = ridge * np.maximum(strength, 1e-12 * max(strength.max(), 1e-12))
    A = X.T @ (w[:, None] * X) / len(runs) + np.diag(pen)
    b = X.T @ (w * (y - X @ theta0)) / len(runs)
    theta = theta0 + np.linalg.solve(A, b)
    theta[:-1] = np.clip(theta[:-1], 0.02, 50.0)
    theta[-1] = max(0.0, theta[-1])
    return replace(prior, gpu_scale={u: float(theta[i]) for i, u in enumerate(uuids)}, cpu_scale=float(theta[n - 2]),
                   hop_ms=float(theta[-1] * 1000), runs=len(runs), created=time.time())


def memory_corrections(pairs: list[tuple[str, int, int]]) -> dict[str, float]:
    """(GPU UUID, predicted bytes, logged bytes) per device and run -> MiB the engine needed beyond the
    plan: the largest excess seen (a GPU the plan over-estimates gets a negative, unused, figure)."""
    out: dict[str, float] = {}
    for uuid, predicted, actual in pairs:
        extra = (actual - predicted) / MIB
        out[uuid] = max(out.get(uuid, extra), extra)
    return {u: round(v, 1) for u, v in out.items()}
