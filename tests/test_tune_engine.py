"""Tune on this PC with the real llama-server on the CPU: the candidates differ in what the CPU can change
(threads, batch), every run is a real launch and a real benchmark, the calibration is saved and used, and
nothing is left running."""

import time

import psutil
import pytest

from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.processes.process import engine_version
from phoenix_gui.engines import engine_named
from phoenix_gui.backends.calibrations import find
from phoenix_gui.backends.tune import Tuner
from phoenix_gui.hardware import detect_system
from phoenix_gui.hardware.rig import Rig
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.calibration import with_calibration

pytestmark = pytest.mark.engine


def test_tune_with_the_real_llama_server_on_the_cpu(tmp_path):
    path = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf", random_data=True)
    model = read_model(path)
    rig = Rig("this PC", [], detect_system(False))
    backend = engine_named("llama-server")
    exe = backend.find()
    version = engine_version(backend, exe)
    base = PlanSettings(context=1024, backend="llama-server", port=free_port())
    t = Tuner(model, rig, str(path), base, exe, budget_s=240, max_runs=4, n_prompt=64, n_gen=64, version=version)
    t.start()
    pids = set()
    end = time.monotonic() + 300
    while t.poll():
        assert time.monotonic() < end, t.message
        if t._m is not None and t._m.launch.process is not None:
            pids.add(t._m.launch.process.pid)
        time.sleep(0.05)
    assert t.state == "done", t.message
    assert len(t.runs) == 4 and all(r.outcome == "ok" and r.measured_tps > 0 for r in t.runs), t.table()
    assert len(pids) >= 3  # real launches, one per run
    for r in t.runs:  # three real generations on each load; the run's speed is their mean
        assert len(r.repeats) == 3 and r.measured_tps == pytest.approx(sum(r.repeats) / 3) and r.spread is not None
    assert t.noise is not None and 0.001 <= t.noise < 0.5  # the repeats' spread, pooled: this machine's noise
    settings = [(r.settings.threads, r.settings.batch, r.settings.context) for r in t.runs[:-1]]
    assert len(set(settings)) == 3 and all(r.settings.gpulayers == 0 for r in t.runs)
    assert t.runs[-1].label == "calibrated winner"
    assert t.winner is [r for r in t.runs if r.settings == t.winner.settings][-1]  # its latest measurement
    assert t.winner.settings.context == base.context  # a run at a smaller context teaches, it is never kept
    cal, note = find(rig, "llama-server", version)
    assert cal is not None and cal.runs == 4 and note.startswith("calibrated on this PC (4 runs")
    assert cal.per_layer_ms.get("CPU", 0) > 0
    bare = make_plan(model, rig, base.with_(devices=(), gpulayers=0)).predicted_tokens_per_s
    used = make_plan(model, with_calibration(rig, cal), base.with_(devices=(), gpulayers=0)).predicted_tokens_per_s
    held = {term for term, _, _ in t.fit.held}
    # the calibration changes later predictions, unless the runs could not pin the CPU down (a tiny model's
    # token is mostly the fixed cost on this CPU), and then the table says so rather than keeping a wrong factor
    assert used != pytest.approx(bare, rel=0.02) or ("cpu" in held and any(
        "the CPU's time per layer" in line and "held at the speed model's figure" in line for line in t.table())), cal
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    print("\n".join(t.table()))
