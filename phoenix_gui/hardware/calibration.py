"""A calibration: what `phoenix tune` measured on one PC with one engine build, as data.

Per GPU (by UUID) and for the CPU, a factor on the speed model's time there (1.0 = the model was right),
one on the cost of the hops between devices, and the memory the engine was seen to need beyond the plan
on each GPU. A rig carries the one that applies to it (Rig.calibration); planner/calibration.py fits it
from measured runs and applies it to plans; backends/calibrations.py keeps it in a file per PC and engine.

"Calibration" here means only this record. Two other things are fitted once, for all PCs, in the source tree:
the speed model's constants, from the public measurements in data/speed-calibration.jsonl
(benchmarks/fit_speed_model.py), and the compute-buffer constants of the engine profiles
(benchmarks/calibrate_compute.py). A third, a calibration.jsonl line written on every launch, is gone (nothing
read it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .. import validate as v


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
    def from_dict(d) -> "Calibration":
        """Raises ValueError (one sentence) for anything that is not a sound calibration: every number finite
        and in range, every name plain text of sane length, the engine one Phoenix knows. A calibration comes
        from a file (maybe one someone sent), and the planner trusts what it holds on every plan after."""
        if not isinstance(d, dict):
            raise ValueError("It is not a Phoenix calibration (not a table).")
        try:
            return _checked(d)
        except v.InputError as e:
            raise ValueError(str(e)) from None


# what a calibration may hold: a factor outside these is a broken fit or a forged file, not a PC
FACTOR_RANGE = (0.01, 100.0)
MEM_EXTRA_MIB = 16384.0  # beyond the plan on one card; more means the plan, not the card, was wrong
MS_PER_LAYER_MAX = 1e5
MAX_RUNS = 1000
FUTURE_S = 2 * 86400  # clocks of two PCs disagree; a date further ahead would outrank every later tune


def _table(x, what: str, check, max_items: int = v.MAX_DEVICES + 1) -> dict:
    if not isinstance(x, dict) or len(x) > max_items:
        raise v.InputError(f"{what} must be a table of at most {max_items} entries.")
    return {v.text(k, f"A name in {what}", 200): check(val) for k, val in x.items()}


def _date(x) -> float:
    t = v.number(x, "Its date")
    if not 0.0 <= t <= time.time() + FUTURE_S:
        raise v.InputError(f"Its date ({t:g} seconds since 1970) is not a past date.")
    return t


def _checked(d: dict) -> "Calibration":
    lo, hi = FACTOR_RANGE
    factor = lambda x: v.number(x, "A speed factor", lo, hi)  # noqa: E731
    key = d.get("key")
    if not key:
        raise v.InputError("It does not say which PC and engine it was measured on.")
    if not isinstance(key, dict):
        raise v.InputError("its key must be a table.")
    gpus = key.get("gpus", [])
    if not isinstance(gpus, list) or len(gpus) > v.MAX_DEVICES:
        raise v.InputError(f"its GPU list must hold at most {v.MAX_DEVICES} GPUs.")
    checked_key = {"gpus": [v.text(g, "A GPU id", 200) for g in gpus],
                   "driver": v.text(key.get("driver", ""), "The driver version", 64),
                   "engine": v.choice(key.get("engine", ""), "engine", v.BACKENDS),
                   "version": v.text(key.get("version", ""), "The engine version", 200)}
    return Calibration(
        gpu_scale=_table(d.get("gpu_scale", {}), "gpu_scale", factor),
        cpu_scale=factor(d.get("cpu_scale", 1.0)),
        hop_scale=v.number(d.get("hop_scale", 1.0), "The hop factor", 0.0, hi),
        mem_extra_mib=_table(d.get("mem_extra_mib", {}), "mem_extra_mib",
                             lambda x: v.number(x, "A memory correction (MiB)", -MEM_EXTRA_MIB, MEM_EXTRA_MIB)),
        runs=v.integer(d.get("runs", 0), "The number of runs", 0, MAX_RUNS),
        created=_date(d.get("created", 0.0)),
        key=checked_key, model=v.text(d.get("model", ""), "The model name", 1024),
        per_layer_ms=_table(d.get("per_layer_ms", {}), "per_layer_ms",
                            lambda x: v.number(x, "A time per layer (ms)", 0.0, MS_PER_LAYER_MAX)))
