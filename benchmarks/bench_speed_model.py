"""Held-out error of the speed model on the measurements, per regime, through make_plan.

    python benchmarks/bench_speed_model.py [--json]

Every row of phoenix_gui/data/speed-calibration.jsonl (or PHOENIX_SPEED_DATA) becomes a rig, a
model and plan settings (benchmarks/speed_data.py) and is predicted by make_plan, as a user's plan
is. Held out: leave one source out — the constants are refitted without every row of the row's
source, then the row is predicted. "shipped" predicts with the constants in
phoenix_gui/data/speed-model.json (fitted on every row: in-sample, shown only for comparison).
Error = |predicted / measured - 1|; bias = median of predicted / measured - 1.
Goal (issue 10): overall median <= 12 %, p90 <= 30 %; hybrid and multi-GPU median <= 20 %.
Goal (issue 19): overall median <= 10 %, p90 <= 25 %; no quant family or device class with >= 5 rows above
20 % median. The second table is per quant family (the file type) and device class (small Pascal: GP104-GP108;
CPU: CPU-only rows); its bands are the ones a plan shows, "few measurements" where a group has < 5 rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_speed_model import leave_one_source_out, table  # noqa: E402
from phoenix_gui.planner.plan import make_plan  # noqa: E402
from phoenix_gui.planner.speed import DEVICE_CLASSES, MIN_BAND_ROWS, QUANT_FAMILIES  # noqa: E402
from speed_data import load_cases  # noqa: E402

REGIME_GROUPS = ("all", "single_gpu", "multi_gpu", "hybrid", "cpu", "moe", "era old", "era current")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print the held-out table as JSON")
    args = ap.parse_args()
    cases, skipped = load_cases()
    held = leave_one_source_out(cases)
    shipped = {i: make_plan(cs.model, cs.rig, cs.settings).predicted_tokens_per_s for i, cs in enumerate(cases)}
    ho, ins = table(cases, held), table(cases, shipped)
    if args.json:
        print(json.dumps(ho, indent=1))
        return 0
    print(f"{len(cases)} rows from {len({c.source for c in cases})} sources "
          f"({len(skipped)} skipped: split or speed unknown); predicted through make_plan")
    print(f"{'regime':14s} {'n':>4s} {'src':>4s} | {'held-out median':>15s} {'p90':>7s} {'bias':>7s} | "
          f"{'shipped (in-sample) median':>26s} {'p90':>7s}")
    for title, groups in (("regime", REGIME_GROUPS), ("family / class", QUANT_FAMILIES + DEVICE_CLASSES)):
        if title != "regime":
            print()
            print(f"{title:18s} {'n':>4s} {'src':>4s} | {'held-out median':>15s} {'p90':>7s} {'bias':>7s} | "
                  f"{'band (measured/predicted)':>25s}")
        for g in groups:
            v, s = ho[g], ins[g]
            if title == "regime":
                print(f"{g:14s} {v['n']:4d} {v['sources']:4d} | {v['median'] * 100:14.1f}% {v['p90'] * 100:6.1f}% "
                      f"{v['bias'] * 100:+6.1f}% | {s['median'] * 100:25.1f}% {s['p90'] * 100:6.1f}%")
            elif v["n"] == 0:
                print(f"{g:18s} {0:4d} {0:4d} | {'no rows':>15s} {'':>7s} {'':>7s} | {'few measurements':>25s}")
            else:
                few = "  few measurements" if v["n"] < MIN_BAND_ROWS else ""
                print(f"{g:18s} {v['n']:4d} {v['sources']:4d} | {v['median'] * 100:14.1f}% {v['p90'] * 100:6.1f}% "
                      f"{v['bias'] * 100:+6.1f}% | {v['band'][0]:11.2f} .. {v['band'][1]:.2f}{few}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
