"""Fit the speed model's constants on the measurements and write phoenix_gui/data/speed-model.json.

    python benchmarks/fit_speed_model.py [--write]

Every row is planned once with make_plan (benchmarks/speed_data.py); the fit then varies only the
constants of phoenix_gui.planner.speed on the speed inputs that plan recorded. The held-out error
(leave one source out: every row of a source on the same side) is measured by
benchmarks/bench_speed_model.py; --write also stores each regime's held-out error band, which
every plan shows next to its tokens/s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from phoenix_gui.planner.plan import make_plan  # noqa: E402
from phoenix_gui.planner.speed import DEFAULT_CONSTANTS, token_seconds  # noqa: E402
from speed_data import Case, load_cases  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "phoenix_gui" / "data" / "speed-model.json"

# (constant, starting value = prior, lower, upper, prior weight on its log). A fitted constant is
# pulled towards its prior, so a constant few rows inform stays physical instead of fitting noise.
PARAMS = [
    ("eff.Pascal", 0.55, 0.2, 1.0, 0.3), ("eff.Turing", 0.62, 0.2, 1.0, 0.3), ("eff.Ampere", 0.68, 0.2, 1.0, 0.3),
    ("eff.Ada Lovelace", 0.72, 0.2, 1.0, 0.3), ("eff.Hopper", 0.6, 0.2, 1.0, 0.3), ("eff.Blackwell", 0.7, 0.2, 1.0, 0.3),
    ("eff_cpu", 0.55, 0.1, 1.0, 0.3), ("gpu_layer_ms", 0.04, 1e-3, 2.0, 0.3), ("cpu_layer_ms", 0.1, 1e-3, 5.0, 0.3),
    ("hop_ms", 0.3, 1e-3, 5.0, 0.3), ("base_ms", 1.0, 1e-2, 20.0, 0.3), ("bw_cap_gbs", 3000.0, 300.0, 1e5, 0.03),
    ("lowbit_factor", 1.0, 1.0, 4.0, 0.3), ("cpu_cap_gbs", 200.0, 20.0, 1e4, 0.03),
]


def unpack(x) -> dict:
    c = json.loads(json.dumps(DEFAULT_CONSTANTS))
    for (name, *_), v in zip(PARAMS, np.exp(x)):
        if name.startswith("eff."):
            c["eff"][name[4:]] = float(v)
        else:
            c[name] = float(v)
    archs = [n[4:] for n, *_ in PARAMS if n.startswith("eff.")]
    c["eff"]["unknown"] = float(np.median([c["eff"][a] for a in archs]))
    c["eff"]["Maxwell"] = c["eff"]["Pascal"] * 0.8
    c["eff"]["Volta"] = c["eff"]["Turing"]
    return c


def x0() -> np.ndarray:
    return np.log([p[1] for p in PARAMS])


def prepare(cases: list[Case]) -> list[tuple[Case, list]]:
    """Each case planned once: the speed inputs make_plan recorded."""
    return [(cs, make_plan(cs.model, cs.rig, cs.settings).speed_devices) for cs in cases]


def residuals(x, prepared) -> np.ndarray:
    c = unpack(x)
    return np.array([np.log(1.0 / token_seconds(devs, c, cs.model.file_type) / cs.tg) for cs, devs in prepared])


def fit(prepared) -> np.ndarray:
    from scipy.optimize import least_squares

    w = np.array([p[4] for p in PARAMS])
    lb, ub = np.log([p[2] for p in PARAMS]), np.log([p[3] for p in PARAMS])

    def f(x):
        return np.concatenate([residuals(x, prepared), w * (x - x0())])

    r = least_squares(f, np.clip(x0(), lb + 1e-9, ub - 1e-9), bounds=(lb, ub), loss="soft_l1", f_scale=0.2)
    return r.x


def leave_one_source_out(cases: list[Case]) -> dict[int, float]:
    """Held-out predicted tokens/s per case (by index), each from constants fitted without any
    row of its source, predicted through make_plan."""
    from phoenix_gui.planner.speed import constants_in_force

    prepared = prepare(cases)
    out = {}
    for src in sorted({cs.source for cs in cases}):
        train = [p for p in prepared if p[0].source != src]
        c = unpack(fit(train))
        with constants_in_force(c):
            for i, cs in enumerate(cases):
                if cs.source == src:
                    out[i] = make_plan(cs.model, cs.rig, cs.settings).predicted_tokens_per_s
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(OUT.parents[2])}")
    args = ap.parse_args()
    cases, skipped = load_cases()
    prepared = prepare(cases)
    x = fit(prepared)
    ins = np.abs(np.exp(residuals(x, prepared)) - 1)
    c = unpack(x)
    print(f"rows used: {len(cases)}, skipped: {len(skipped)}; fitted constants: {len(PARAMS)}")
    print(f"in-sample |error|: median {np.median(ins) * 100:.1f} %, p90 {np.percentile(ins, 90) * 100:.1f} %"
          " (held-out: benchmarks/bench_speed_model.py)")
    print(json.dumps(c, indent=1))
    if args.write:
        old = json.loads(OUT.read_text(encoding="utf-8")) if OUT.exists() else {}
        old.update({"about": "Constants of phoenix_gui.planner.speed, fitted by benchmarks/fit_speed_model.py on "
                             "phoenix_gui/data/speed-calibration.jsonl (public llama.cpp benchmark results).",
                    "rows": len(cases), "constants": {**old.get("constants", {}), **c}})
        OUT.write_text(json.dumps(old, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
