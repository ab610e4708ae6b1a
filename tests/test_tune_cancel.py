"""Cancel leaves no process, with the real llama-server: while a run loads, and while a run benchmarks;
and the time left is shown while the tune runs (the CLI's per-run line, the panel's label)."""

import time

import psutil
import pytest

from phoenix_gui.backends.lifecycle import State
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.engines import engine_named
from phoenix_gui.backends.tune import Tuner
from phoenix_gui.hardware import detect_system
from phoenix_gui.hardware.rig import Rig
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.planner import PlanSettings
from machine_helpers import gone

pytestmark = pytest.mark.engine


def tuner(tmp_path, n_gen=2048):
    path = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf", random_data=True)
    exe = engine_named("llama-server").find()
    base = PlanSettings(context=1024, backend="llama-server", port=free_port())
    # a long generation: the benchmark is still running when the test cancels it
    return Tuner(read_model(path), Rig("this PC", [], detect_system(False)), str(path), base, exe, budget_s=240,
                 max_runs=4, n_prompt=64, n_gen=n_gen, version="b0"), base.port


def until(t: Tuner, cond, timeout=120.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, t.message
        assert t.poll(), t.message
        time.sleep(0.02)


def tree(pid: int) -> list[int]:
    try:
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return [pid]


def port_free(port: int) -> bool:
    return not any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in psutil.net_connections("tcp"))


@pytest.mark.parametrize("when", ["loading", "benchmarking"])
def test_cancel_leaves_no_process(tmp_path, when):
    t, port = tuner(tmp_path)
    t.start()
    until(t, lambda: t._m is not None and t._m.launch.process is not None)
    if when == "benchmarking":
        until(t, lambda: t._m.state is State.BENCHMARKING)
    pids = tree(t._m.launch.process.pid)
    assert all(psutil.pid_exists(p) for p in pids)
    assert 0 < t.time_left() <= t.budget_s and 0 <= t.fraction() < 1  # what the bar and "about N s left" show
    t0 = time.monotonic()
    t.cancel()
    assert time.monotonic() - t0 < 12
    assert t.state == "cancelled" and not t.poll() and t.message == "Tuning was cancelled; nothing is left running."
    assert gone(pids) and port_free(port)
