"""Compare the planner's CPU-side prediction with llama-server's logged buffers on skeleton models.

    python benchmarks/calibrate_compute.py [--quick]

Loads each configuration in the real engine (CPU, no GPU needed) and prints predicted vs logged
model / KV / compute / output buffer sizes in MiB. The constants in planner/compute.py are fitted
to this engine (profile "llama-server-current", planner/engines.py); other profiles differ only by
the rules their profile states (e.g. koboldcpp's full-ubatch logits).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.backends.probe import probe_buffers  # noqa: E402
from phoenix_gui.hardware.rig import MIB, Rig, SystemInfo  # noqa: E402
from phoenix_gui.model import read_model, write_skeleton  # noqa: E402
from phoenix_gui.planner import PlanSettings, make_plan  # noqa: E402

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


def compare(path: Path, ctx, fa, ub, kv):
    model = read_model(path)
    s = PlanSettings(context=ctx, flash_attn=fa, batch=ub, cache_type_k=kv, cache_type_v=kv if fa else "f16",
                     backend="llama-server", engine="llama-server-current", use_mmap=True)
    plan = make_plan(model, cpu_rig(), s)
    rep, log = probe_buffers(path, engine_args(ctx, fa, ub, kv))
    cpu = plan.cpu
    return {
        "weights": (cpu.weights_bytes / MIB, rep.mib("cpu", "model")),
        "kv": (cpu.kv_bytes / MIB, rep.mib("cpu", "KV")),
        "compute": (cpu.compute_bytes / MIB, rep.mib("cpu", "compute") + rep.mib("cpu", "output")),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="only the small models")
    args = ap.parse_args()
    print(f"{'preset':30s} {'ctx':>6s} {'FA':>3s} {'ub':>5s} {'kv':>5s} | {'weights pred/log':>20s} | {'KV pred/log':>16s} | {'compute pred/log':>18s} {'err':>6s}")
    with tempfile.TemporaryDirectory() as d:
        for preset, ctx, fa, ub, kv in CONFIGS:
            if args.quick and not preset.startswith(("tiny", "qwen2.5-7b")):
                continue
            path = write_skeleton(preset, Path(d) / f"{preset}.gguf")
            r = compare(path, ctx, fa, ub, kv)
            (wp, wl), (kp, kl), (cp, cl) = r["weights"], r["kv"], r["compute"]
            print(f"{preset:30s} {ctx:6d} {'on' if fa else 'off':>3s} {ub:5d} {kv:>5s} | {wp:9.2f}/{wl:9.2f} | "
                  f"{kp:7.2f}/{kl:7.2f} | {cp:8.2f}/{cl:8.2f} {((cp - cl) / max(cl, 1)) * 100:+5.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
