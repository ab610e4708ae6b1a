"""Fit the speed model's constants on the calibration data and write phoenix_gui/data/speed-model.json.

    python benchmarks/fit_speed_model.py [--write]

Prints in-sample and grouped cross-validated error (each fold leaves out whole sources, so a
benchmark series is never used to predict itself).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from phoenix_gui.planner.speed import DEFAULT_CONSTANTS, token_seconds  # noqa: E402
from speed_data import load_scenarios  # noqa: E402

ARCHS = ["Pascal", "Volta", "Turing", "Ampere", "Ada Lovelace", "Hopper", "Blackwell"]
SCALARS = ["eff_cpu", "gpu_layer_ms", "cpu_layer_ms", "hop_ms", "base_ms", "bw_cap_gbs", "lowbit_factor", "cpu_cap_gbs"]


def unpack(x) -> dict:
    c = json.loads(json.dumps(DEFAULT_CONSTANTS))
    v = np.exp(x)
    for i, a in enumerate(ARCHS):
        c["eff"][a] = float(min(v[i], 1.0))
    for j, k in enumerate(SCALARS):
        c[k] = float(v[len(ARCHS) + j])
    c["eff"]["unknown"] = float(np.median([c["eff"][a] for a in ARCHS]))
    c["eff"]["Maxwell"] = c["eff"]["Pascal"] * 0.8
    c["eff_cpu"] = min(c["eff_cpu"], 1.0)
    return c


def x0():
    c = DEFAULT_CONSTANTS
    return np.log([c["eff"][a] for a in ARCHS] + [c[k] for k in SCALARS])


def residuals(x, scen):
    c = unpack(x)
    return np.array([np.log(1.0 / token_seconds(s.devices, c, s.row["quant"]) / s.tg) for s in scen])


def fit(scen):
    from scipy.optimize import least_squares

    # Prior pulls unseen or rare architectures towards a common efficiency instead of wild values.
    def f(x):
        prior = 0.3 * (x - x0())
        prior[len(ARCHS) + SCALARS.index("bw_cap_gbs")] *= 0.1  # weak priors on the saturations
        prior[len(ARCHS) + SCALARS.index("cpu_cap_gbs")] *= 0.1
        return np.concatenate([residuals(x, scen), prior])

    lb = np.log([0.2] * len(ARCHS) + [0.1, 1e-3, 1e-3, 1e-3, 1e-2, 300.0, 1.0, 20.0])
    ub = np.log([1.0] * len(ARCHS) + [1.0, 2.0, 5.0, 5.0, 20.0, 1e5, 4.0, 1e4])
    r = least_squares(f, np.clip(x0(), lb + 1e-9, ub - 1e-9), bounds=(lb, ub), loss="soft_l1", f_scale=0.2)
    return r.x


def errors(x, scen):
    return np.abs(np.exp(residuals(x, scen)) - 1.0)


def grouped_cv(scen, folds=5, seed=0):
    groups = sorted({s.group for s in scen})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    # Big sources are split by model so one benchmark table is not a whole fold.
    keyed = {}
    for s in scen:
        key = s.group if sum(t.group == s.group for t in scen) < 20 else s.group + "|" + s.row["model"]
        keyed.setdefault(key, []).append(s)
    keys = sorted(keyed)
    rng.shuffle(keys)
    errs = []
    for k in range(folds):
        test_keys = set(keys[k::folds])
        train = [s for key in keys if key not in test_keys for s in keyed[key]]
        test = [s for key in test_keys for s in keyed[key]]
        if not test:
            continue
        errs.extend(errors(fit(train), test))
    return np.array(errs)


def fit_prompt(scen, c) -> dict:
    """Rough prompt-speed multipliers: one factor for GPU-only rows, one for rows with CPU weights."""
    from phoenix_gui.planner.speed import prompt_tokens_per_second

    out = {}
    for key, sel in (("pp_gpu_mult", lambda s: all(d.kind == "gpu" for d in s.devices)),
                     ("pp_cpu_mult", lambda s: any(d.kind == "cpu" for d in s.devices))):
        rows = [s for s in scen if s.pp and sel(s)]
        if not rows:
            continue
        ratios = [np.log(s.pp / prompt_tokens_per_second(s.devices, 512, c)) for s in rows]
        out[key] = float(c[key] * np.exp(np.median(ratios)))
        c = {**c, key: out[key]}
    errs = [abs(prompt_tokens_per_second(s.devices, 512, c) / s.pp - 1) for s in scen if s.pp]
    return out, np.array(errs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write phoenix_gui/data/speed-model.json")
    args = ap.parse_args()
    scen, skipped = load_scenarios()
    x = fit(scen)
    ins = errors(x, scen)
    cv = grouped_cv(scen)
    print(f"scenarios used: {len(scen)}, skipped: {len(skipped)} (split unknown or no speed)")
    print(f"{'set':28s} {'median |err|':>12s} {'p90 |err|':>10s}")
    print(f"{'in-sample':28s} {np.median(ins) * 100:11.1f}% {np.percentile(ins, 90) * 100:9.1f}%")
    print(f"{'grouped 5-fold held-out':28s} {np.median(cv) * 100:11.1f}% {np.percentile(cv, 90) * 100:9.1f}%")
    c = unpack(x)
    pp, pp_err = fit_prompt(scen, c)
    c.update(pp)
    print(f"{'prompt speed (rough), in-sample':28s} {np.median(pp_err) * 100:11.1f}% {np.percentile(pp_err, 90) * 100:9.1f}%")
    print(json.dumps(c, indent=1))
    if args.write:
        out = Path(__file__).resolve().parents[1] / "phoenix_gui" / "data" / "speed-model.json"
        out.write_text(json.dumps({
            "about": "Constants of phoenix_gui.planner.speed, fitted by benchmarks/fit_speed_model.py on "
                     "shared/data/speed-calibration.jsonl (public llama.cpp benchmark results).",
            "scenarios": len(scen), "in_sample_median_abs_err": round(float(np.median(ins)), 4),
            "cv_median_abs_err": round(float(np.median(cv)), 4), "cv_p90_abs_err": round(float(np.percentile(cv, 90)), 4),
            "constants": c}, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
