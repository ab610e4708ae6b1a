"""Error of the shipped speed model (phoenix_gui/data/speed-model.json) on the calibration data.

    python benchmarks/bench_speed_model.py

Per kind of setup: median and 90th-percentile absolute error of predicted generation tokens/s,
with the shipped constants (in-sample) and with grouped 5-fold cross-validation (constants refitted
without the held-out sources). Targets: median <= 15 %, p90 <= 35 % on data not fitted on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_speed_model import grouped_cv  # noqa: E402
from phoenix_gui.planner.speed import speed_constants, tokens_per_second  # noqa: E402
from speed_data import load_scenarios  # noqa: E402


def main() -> int:
    scen, skipped = load_scenarios()
    c = speed_constants()
    err = {}
    for s in scen:
        e = abs(tokens_per_second(s.devices, c, s.row["quant"]) / s.tg - 1)
        err.setdefault(s.row["kind"], []).append(e)
        err.setdefault("all", []).append(e)
    print(f"{'set':34s} {'n':>4s} {'median':>8s} {'p90':>8s}")
    for k in ("single_gpu", "multi_gpu", "hybrid", "cpu", "all"):
        v = np.array(err.get(k, []))
        if len(v):
            print(f"{'shipped constants, ' + k:34s} {len(v):4d} {np.median(v) * 100:7.1f}% {np.percentile(v, 90) * 100:7.1f}%")
    cv = grouped_cv(scen)
    print(f"{'grouped 5-fold held-out, all':34s} {len(cv):4d} {np.median(cv) * 100:7.1f}% {np.percentile(cv, 90) * 100:7.1f}%")
    print(f"(skipped {len(skipped)} rows whose split is unknown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
