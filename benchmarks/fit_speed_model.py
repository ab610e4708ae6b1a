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
from phoenix_gui.planner.speed import (DEFAULT_CONSTANTS, DEVICE_CLASSES, QUANT_FAMILIES,  # noqa: E402
                                       token_seconds)
from speed_data import Case, load_cases  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "phoenix_gui" / "data" / "speed-model.json"

# (constant, starting value = prior, lower, upper, prior weight on its log). A fitted constant is
# pulled towards its prior, so a constant few rows inform stays physical instead of fitting noise.
COST_FAMILIES = ["f16", "q8_0", "legacy", "q6_k", "k23", "iq_low"]
# What the kernels allow, relative to k45: F16 unpacks nothing (on a GPU its mat-vec converts each half to f32 and has no int8 path: loosely bounded), Q8_0 and
# the legacy blocks are simpler than k-quants, Q6_K does a little more per weight, 2-3 bit and codebook
# types more again. A fit that leaves these ranges explains something else (a card's saturation) by a type.
COST_BOUNDS = {
    "gpu": {"f16": (0.2, 3.0), "q8_0": (0.3, 1.2), "legacy": (0.5, 1.2), "q6_k": (0.9, 2.0), "k23": (1.0, 8.0),
            "iq_low": (1.0, 8.0)},
    "cpu": {"f16": (0.5, 3.0), "q8_0": (0.4, 1.2), "legacy": (0.5, 1.2), "q6_k": (0.9, 2.0), "k23": (1.0, 4.0),
            "iq_low": (1.0, 8.0)},
}
GENERATIONS = ["Pascal", "Turing", "Ampere", "Ada Lovelace", "Blackwell"]
ARCHS = ["Pascal", "Turing", "Ampere", "Ada Lovelace", "Hopper", "Blackwell"]
PARAMS = [
    # one achieved-bandwidth fraction for all GPUs, and per architecture a ratio to it, pulled
    # towards 1: an architecture that few sources show keeps the common value
    ("eff_gpu", 0.8, 0.2, 1.0, 0.3),
    *[(f"ratio.{a}", 1.0, 0.3, 1.6, 1.0) for a in ARCHS],
    ("gpu_flop", 4.0, 0.5, 100.0, 0.3), ("gpu_overlap", 0.5, 0.01, 1.0, 0.3),
    # kernel cost per family relative to the 4-5 bit k-quants (k45 = 1, the anchor): priors from the
    # kernels' instruction counts (speed.DEFAULT_CONSTANTS), held there unless rows of the family move them
    *[(f"gpu_cost.{f}", DEFAULT_CONSTANTS["gpu_cost"][f], *COST_BOUNDS["gpu"][f], 0.15) for f in COST_FAMILIES],
    *[(f"cpu_cost.{f}", DEFAULT_CONSTANTS["cpu_cost"][f], *COST_BOUNDS["cpu"][f], 0.15) for f in COST_FAMILIES],
    *[(f"cpu_isa.{k}", DEFAULT_CONSTANTS["cpu_isa"][k], 0.3, 4.0, 0.3) for k in ("AVX-512", "NEON", "NEON-wide")],
    ("bw_cap_gbs", 10000.0, 300.0, 1e5, 0.03),
    ("eff_cpu", 0.6, 0.1, 1.0, 0.3), ("cpu_cap_gbs", 300.0, 20.0, 1e4, 0.03), ("core_gweights", 2.0, 0.1, 50.0, 0.3),
    ("gpu_layer_ms", 0.04, 1e-3, 2.0, 0.3), ("cpu_layer_ms", 0.1, 1e-3, 5.0, 0.3), ("hop_ms", 0.15, 1e-3, 5.0, 0.3),
    ("base_ms.current", 1.0, 1e-2, 20.0, 0.3), ("base_ms.old", 1.5, 1e-2, 20.0, 0.3),
]


def unpack(x) -> dict:
    c = json.loads(json.dumps(DEFAULT_CONSTANTS))
    v = dict(zip([p[0] for p in PARAMS], np.exp(x)))
    for name, val in v.items():
        head, _, key = name.partition(".")
        if head == "ratio" or name == "eff_gpu":
            continue
        if key:
            c[head][key] = float(val)
        else:
            c[name] = float(val)
    common = v["eff_gpu"]
    for a in ARCHS:
        c["eff"][a] = float(min(1.0, common * v["ratio." + a]))
    # a newer consumer generation's memory path is not less efficient than the one before: without this a
    # fit can rank an RTX 2070 SUPER above an RTX 3070 (same bandwidth, more compute); HBM parts (A100,
    # H100) saturate through bw_cap_gbs instead
    for older, newer in zip(GENERATIONS, GENERATIONS[1:]):
        c["eff"][newer] = max(c["eff"][newer], c["eff"][older])
    # architectures without rows: Volta as Turing; Maxwell and Kepler below Pascal (priors, no data)
    c["eff"]["unknown"] = float(common)
    c["eff"]["Volta"] = c["eff"]["Turing"]
    c["eff"]["Maxwell"] = c["eff"]["Pascal"] * 0.85
    c["eff"]["Kepler"] = c["eff"]["Pascal"] * 0.75
    return c


def x0() -> np.ndarray:
    return np.log([p[1] for p in PARAMS])


def prepare(cases: list[Case]) -> list[tuple[Case, list]]:
    """Each case planned once: the speed inputs make_plan recorded."""
    return [(cs, make_plan(cs.model, cs.rig, cs.settings).speed_inputs) for cs in cases]


def residuals(x, prepared) -> np.ndarray:
    c = unpack(x)
    return np.array([np.log(1.0 / token_seconds(inp, c) / cs.tg) for cs, inp in prepared])


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


def fit_prompt(prepared, c: dict) -> dict:
    """Rough prompt-speed multipliers: one for GPU-only rows, one for rows with weights in RAM."""
    from phoenix_gui.planner.speed import prompt_tokens_per_second

    c = dict(c)
    for key, sel in (("pp_gpu_mult", lambda inp: inp.devices[-1].bytes_per_token < 1e6),
                     ("pp_cpu_mult", lambda inp: inp.devices[-1].bytes_per_token >= 1e6)):
        rows = [(cs, inp) for cs, inp in prepared if cs.row.get("pp_tps") and sel(inp)]
        if rows:
            r = [np.log(cs.row["pp_tps"] / prompt_tokens_per_second(inp.devices, 512, c)) for cs, inp in rows]
            c[key] = float(c[key] * np.exp(np.median(r)))
    return c


GROUPS = ("all", "single_gpu", "multi_gpu", "hybrid", "cpu", "moe", "era old", "era current",
          *QUANT_FAMILIES, *DEVICE_CLASSES)


def table(cases: list[Case], pred: dict[int, float]) -> dict[str, dict]:
    """Per group: rows, sources, median and 90th percentile of |predicted / measured - 1|, the
    median bias, and the band a plan shows: measured / predicted at the 10th and 90th percentile."""
    out = {}
    for g in GROUPS:
        idx = [i for i, cs in enumerate(cases) if i in pred and (g == "all" or g in cs.labels)]
        if not idx:
            out[g] = {"n": 0, "sources": 0, "median": float("nan"), "p90": float("nan"), "bias": float("nan"),
                      "band": [float("nan"), float("nan")]}
            continue
        ratio = np.array([pred[i] / cases[i].tg for i in idx])
        err = np.abs(ratio - 1)
        out[g] = {"n": len(idx), "sources": len({cases[i].source for i in idx}),
                  "median": float(np.median(err)), "p90": float(np.percentile(err, 90)),
                  "bias": float(np.median(ratio) - 1),
                  "band": [float(np.percentile(1 / ratio, 10)), float(np.percentile(1 / ratio, 90))]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(OUT.parents[2])}")
    args = ap.parse_args()
    cases, skipped = load_cases()
    prepared = prepare(cases)
    x = fit(prepared)
    ins = np.abs(np.exp(residuals(x, prepared)) - 1)
    c = fit_prompt(prepared, unpack(x))
    print(f"rows used: {len(cases)}, skipped: {len(skipped)}; fitted constants: {len(PARAMS)}")
    print(f"in-sample |error|: median {np.median(ins) * 100:.1f} %, p90 {np.percentile(ins, 90) * 100:.1f} %"
          " (held-out: benchmarks/bench_speed_model.py)")
    print(json.dumps(c, indent=1))
    if args.write:
        held = table(cases, leave_one_source_out(cases))
        bands = {g: ({k: round(v[k], 4) if isinstance(v[k], float) else v[k] for k in ("n", "sources", "median", "p90", "bias")}
                     | {"band": [round(x, 4) for x in v["band"]]}) if v["n"] else {"n": 0, "sources": 0}
                 for g, v in held.items()}
        out = {"about": "Constants of phoenix_gui.planner.speed, fitted by benchmarks/fit_speed_model.py on "
                        "phoenix_gui/data/speed-calibration.jsonl (public llama.cpp benchmark results); bands: "
                        "held-out error per regime (leave one source out), which plans show as 'likely'.",
               "rows": len(cases), "fitted_constants": len(PARAMS), "constants": c, "bands": bands}
        OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
