"""How noisy one tuning measurement is, on the real engine: repeats within one load and between loads.

The tune measures each candidate plan with one load of the engine and a short benchmark (the tuning
prompt and generated tokens, planner/tuning.py). Repeating the benchmark on the loaded model costs
seconds where the load costs tens; it pays only if the noise is mostly per repeat (timing jitter) rather
than per load (where the engine happened to put its buffers, a clock state that lasts the load). This
script loads the real llama-server (CPU: no GPU here) LOADS times with the same plan, runs the tuning
benchmark REPEATS times on each load, and splits the spread of the per-load means into the two parts:

  within   - the relative standard deviation of one repeat around its load's mean (pooled)
  between  - the relative standard deviation of the load means
  per load - what between leaves once the within part of a mean (within / sqrt(REPEATS)) is taken
             out: the noise that repeating cannot remove

Run: .venv/bin/python benchmarks/run_noise.py [--loads 5] [--repeats 5] [--layers 6] [--threads 2]
The model is a skeleton with Qwen2.5-7B's layers and vocabulary, cut to --layers layers (sparse data:
the engine computes every weight the same whatever its value). Quiet machine wanted: anything else
running on the cores shows up as noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phoenix_gui.backends.lifecycle import LaunchMachine, State  # noqa: E402
from phoenix_gui.backends.probe import llama_server_binary  # noqa: E402
from phoenix_gui.backends.processes.ports import free_port  # noqa: E402
from phoenix_gui.backends.processes.states import wait_while  # noqa: E402
from phoenix_gui.hardware import detect_rig  # noqa: E402
from phoenix_gui.model import read_model, write_skeleton  # noqa: E402
from phoenix_gui.model.presets import load_preset  # noqa: E402
from phoenix_gui.planner import PlanSettings, make_plan  # noqa: E402
from phoenix_gui.planner.tuning import RUN_GEN, RUN_PROMPT  # noqa: E402


def one_load(model, rig, path: Path, exe: Path, settings: PlanSettings, repeats: int) -> list[float]:
    plan = make_plan(model, rig, settings.with_(port=free_port()))
    m = LaunchMachine(plan, rig, model, str(path), str(exe), timeout=300)
    m.start()
    try:
        if wait_while(m, {State.LOADING}, every=0.05) is not State.READY:
            raise SystemExit(f"the engine did not load: {m.message}")
        m.benchmark(RUN_PROMPT, RUN_GEN, repeats)
        wait_while(m, {State.BENCHMARKING}, every=0.05)
    finally:
        m.stop()
    res = m.benchmarked.result if m.benchmarked else None
    if res is None or len(res.gen_repeats) != repeats:
        raise SystemExit(f"the benchmark failed: {m.message}")
    return res.gen_repeats


def split_noise(loads: list[list[float]]) -> tuple[float, float, float]:
    """(within, between, per load) relative standard deviations of tokens/s; see the module's text."""
    r = len(loads[0])
    means = [statistics.fmean(x) for x in loads]
    grand = statistics.fmean(means)
    within = math.sqrt(statistics.fmean(statistics.variance(x) for x in loads)) / grand
    between = statistics.stdev(means) / grand if len(means) > 1 else 0.0
    per_load = math.sqrt(max(0.0, between ** 2 - within ** 2 / r))
    return within, between, per_load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.loads < 2 or a.repeats < 2:
        ap.error("--loads and --repeats need at least 2")
    preset = dataclasses.replace(load_preset("qwen2.5-7b-instruct-q4_k_m"), key="noise-probe", n_layer=a.layers)
    rig = dataclasses.replace(detect_rig(measure_bandwidth=False), gpus=[])
    exe = llama_server_binary()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_skeleton(preset, Path(tmp) / "noise-probe.gguf")
        model = read_model(path)
        settings = PlanSettings(context=1024, threads=a.threads, devices=(), gpulayers=0, backend="llama-server")
        t0 = time.time()
        loads = []
        for i in range(a.loads):
            loads.append(one_load(model, rig, path, exe, settings, a.repeats))
            print(f"load {i + 1}: " + "  ".join(f"{x:.2f}" for x in loads[-1]) + " tokens/s", flush=True)
    within, between, per_load = split_noise(loads)
    print(f"run_noise: llama-server on the CPU ({a.threads} threads), Qwen2.5-7B cut to {a.layers} layers, "
          f"{a.loads} loads x {a.repeats} repeats of {RUN_PROMPT} prompt + {RUN_GEN} generated tokens "
          f"({time.time() - t0:.0f} s)")
    print(f"{'within (one repeat)':>20}  {'between (load means)':>20}  {'per load':>9}")
    print(f"{within:>20.2%}  {between:>20.2%}  {per_load:>9.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
