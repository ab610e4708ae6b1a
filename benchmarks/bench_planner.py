"""Planner speed: GGUF metadata read, one plan recompute, auto-fit. Prints a table of medians.

    python benchmarks/bench_planner.py

Targets (issue #2): metadata read of the 32B skeleton < 100 ms, one plan for 64 layers x 4 GPUs
< 1 ms, auto-fit < 50 ms at 4 GPUs and < 250 ms at 8 GPUs.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.hardware.rig import GIB, MIB, GpuInfo, Rig, SystemInfo  # noqa: E402
from phoenix_gui.model import preset_model_info, read_model, write_skeleton  # noqa: E402
from phoenix_gui.planner import PlanSettings, make_plan  # noqa: E402
from phoenix_gui.planner.autofit import auto_fit  # noqa: E402

CARDS = [("NVIDIA GeForce GTX 1070", 8192, 256.3, "Pascal", (6, 1)), ("NVIDIA GeForce RTX 3060", 12288, 360.0, "Ampere", (8, 6)),
         ("Tesla P40", 24576, 345.6, "Pascal", (6, 1)), ("NVIDIA GeForce RTX 2080", 8192, 448.0, "Turing", (7, 5))]


def rig(n: int) -> Rig:
    gpus = []
    for i in range(n):
        name, vram, bw, arch, cc = CARDS[i % len(CARDS)]
        gpus.append(GpuInfo(i, name, f"GPU-{i}", f"00000000:{i + 1:02X}:00.0", vram * MIB, vram * MIB, 0, cc, arch, bw, "table"))
    return Rig(f"{n} GPUs", gpus, SystemInfo(128 * GIB, 120 * GIB, 16, 32, 60.0, "rig file"), simulated=True)


def timeit(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def row(name, samples, target):
    med = statistics.median(samples)
    p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
    ok = "yes" if med < target else "NO"
    print(f"{name:48s} {med:9.3f} {p90:9.3f} {target:9.1f}   {ok}")


def main() -> int:
    print(f"{'benchmark (ms)':48s} {'median':>9s} {'p90':>9s} {'target':>9s}   met")
    with tempfile.TemporaryDirectory() as d:
        p = write_skeleton("qwen2.5-32b-instruct-q4_k_m", Path(d) / "q32.gguf")
        read_model(p)  # warm the page cache, as a second open in the app would be
        row("read_model: Qwen2.5-32B Q4_K_M skeleton (152k vocab)", timeit(lambda: read_model(p), 30), 100)
        p8 = write_skeleton("gemma-3-12b-it-q4_k_m", Path(d) / "g12.gguf")
        row("read_model: Gemma-3-12B skeleton (262k vocab)", timeit(lambda: read_model(p8), 30), 100)
    from phoenix_gui.hardware.system import measure_ram_bandwidth

    row("RAM bandwidth measurement (uncached, once per machine)", timeit(measure_ram_bandwidth, 3), 500)
    m = preset_model_info("qwen2.5-32b-instruct-q4_k_m")
    r4 = rig(4)
    s = PlanSettings(context=8192, gpulayers=50, tensor_split=(1, 3, 2, 2))
    make_plan(m, r4, s)
    row("make_plan: 64 layers x 4 GPUs (slider move)", timeit(lambda: make_plan(m, r4, s), 2000), 1)
    s2 = s.with_(context=8448)
    row("make_plan: same, context changed (KV recomputed)", timeit(lambda: make_plan(m, r4, s2.with_(context=8192 + 256 * (time.perf_counter_ns() % 50))), 300), 1)
    for n, target in ((1, 50), (2, 50), (3, 50), (4, 50), (6, 250), (8, 250)):
        rn = rig(n)
        row(f"auto_fit fastest: Qwen2.5-32B, {n} GPU(s)", timeit(lambda: auto_fit(m, rn, PlanSettings(context=8192)), 15), target)
    moe = preset_model_info("qwen3-30b-a3b-q4_k_m")
    seed = __import__("phoenix_gui.hardware", fromlist=["load_rig"]).load_rig(
        Path(__file__).resolve().parents[1] / "phoenix_gui" / "data" / "rigs" / "phoenix-cluster.toml")
    row("auto_fit fastest: Qwen3-30B-A3B MoE, seed rig (3)", timeit(lambda: auto_fit(moe, seed, PlanSettings(context=4096)), 10), 50)
    row("auto_fit fastest: Qwen2.5-32B, seed rig (3)", timeit(lambda: auto_fit(m, seed, PlanSettings(context=4096)), 15), 50)
    return 0


if __name__ == "__main__":
    sys.exit(main())
