"""How long the advisor's whole table takes on the seed rig (the demo rig: GTX 1050 Ti 4 GB + RTX 2080 8 GB +
GTX 1060 6 GB, 64 GB RAM), for a dense and a MoE model.

    python benchmarks/bench_advise.py [--repeats 3] [--no-headroom]

Targets (issue 20): a dense 32B's table of at least 150 plans under 2 s and a MoE's under 5 s, on 2 cores: timed
on the common quants x 3 contexts (4k, 16k, 32k) x 3 KV types (153 and 162 rows). The default table of `phoenix
advise` is larger (every context from 2k doubling to the trained one: 255 and 324 rows); its time is printed too,
without a target (the CLI shows progress while it runs). Each row is two auto-fits (the fastest plan and the
most-headroom plan) from one search. Prints the rows, the seconds (median of the repeats), the plans per second,
and how many rows fit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.hardware import demo_rig_path, load_rig  # noqa: E402
from phoenix_gui.model import preset_model_info  # noqa: E402
from phoenix_gui.model.presets import load_preset  # noqa: E402
from phoenix_gui.model.presets import source_of_preset  # noqa: E402
from phoenix_gui.planner import PlanSettings  # noqa: E402
from phoenix_gui.planner.advisor import COMMON, KV_TYPES, advise, contexts_for  # noqa: E402

CASES = (("dense", "qwen2.5-32b-instruct-q4_k_m", 2.0), ("MoE", "qwen3-30b-a3b-q4_k_m", 5.0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-headroom", action="store_true", help="the fastest plan only")
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2, as phoenix advise)")
    args = ap.parse_args()
    rig = load_rig(demo_rig_path())
    print(f"{'model':44s} {'rows':>5s} {'contexts':>22s} {'s (median)':>10s} {'rows/s':>7s} {'fit':>5s} {'target':>7s}")
    worst = 0
    grids = [(None, (4096, 16384, 32768)), ("default", None)]
    for (kind, name, target), (grid, fixed) in [(c, g) for c in CASES for g in grids]:
        model, src = preset_model_info(name), source_of_preset(load_preset(name))
        ctxs = list(fixed) if fixed else contexts_for(model)
        if grid:
            target = None
        times, rows = [], []
        for _ in range(args.repeats):
            a = advise(model, rig, PlanSettings(), src, list(COMMON), ctxs, KV_TYPES, headroom=not args.no_headroom,
                       workers=args.workers)
            times.append(a.seconds)
            rows = a.rows
        s = statistics.median(times)
        ctx_text = ",".join(f"{c // 1024}k" for c in ctxs)
        label = f"{model.name} ({kind}{', default table' if grid else ''})"
        verdict = "" if target is None else ("" if s <= target else "  MISSED")
        worst = max(worst, bool(verdict))
        print(f"{label:44s} {len(rows):5d} {ctx_text:>22s} {s:10.2f} {len(rows) / s:7.0f} "
              f"{sum(r.fits for r in rows):5d} {'<' + format(target, 'g') + ' s' if target else '-':>7s}{verdict}")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
