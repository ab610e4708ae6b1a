"""The launch state machine (backends/lifecycle.py) with koboldcpp's stand-in: legal transitions only,
listeners and history, a poll() that never blocks, bounded retries, the benchmark, and the checks made
once the server is ready (no layer on a GPU, the engine's library missing)."""

import dataclasses
import time
from pathlib import Path

import pytest

from phoenix_gui.backends import lifecycle
from phoenix_gui.backends.diagnose import classify
from phoenix_gui.backends.lifecycle import IllegalTransition, LaunchMachine, State
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.planner import PlanSettings, make_plan
from machine_helpers import drive, gone  # noqa: F401

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))
NO_CUDA = "No layers reached a GPU: this koboldcpp has no CUDA (use koboldcpp_cu12 or a CUDA build)."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_skeleton("tiny-llama-f16", tmp_path_factory.mktemp("m") / "tiny.gguf", random_data=True)


def machine(tiny, rig=None, **kw):
    rig = rig or load_rig(demo_rig_path())
    model = read_model(tiny)
    plan = make_plan(model, rig, PlanSettings(context=2048, port=free_port(), tensor_split=(1, 1, 1)))
    return LaunchMachine(plan, rig, model, str(tiny), exe=FAKE, **kw)


def states(m):
    return [t.new for t in m.history]


def test_transitions_are_reported_kept_and_checked(tiny):
    m = machine(tiny)
    heard = []
    m.on_transition(lambda old, new, info: heard.append((old, new)))
    with pytest.raises(IllegalTransition):
        m.benchmark()  # not ready: a bug in the caller
    m.start()
    with pytest.raises(IllegalTransition):
        m.start()
    drive(m)
    assert m.state is State.READY and m.running and not m.done
    m.stop()
    assert states(m) == [State.PREFLIGHT, State.STARTING, State.LOADING, State.READY, State.STOPPING, State.STOPPED]
    assert heard == [(t.old, t.new) for t in m.history]
    assert m.done and not m.running
    with pytest.raises(IllegalTransition):
        m._to(State.READY)  # stopped is final


def test_poll_returns_quickly_while_the_probe_hangs(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_LOAD_S", "1.5")
    m = machine(tiny)
    slow = m.launch.backend.is_ready

    def hanging_probe(host, port):  # a server that takes its time to answer
        time.sleep(0.5)
        return slow(host, port)

    m.launch.backend.is_ready = hanging_probe
    m.start()
    worst = 0.0
    end = time.monotonic() + 30
    while m.state is State.LOADING and time.monotonic() < end:
        t0 = time.perf_counter()
        m.poll()
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.02)
    try:
        assert m.state is State.READY
        assert worst < 0.05
    finally:
        m.stop()


def test_a_retry_without_a_smaller_plan_ends_in_failed(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_MAX_LAYERS", "0")
    monkeypatch.setenv("FAKE_KCPP_OOM_MODE", "clean")
    monkeypatch.setattr(lifecycle, "smaller_plan", lambda *a, **k: None)
    m = machine(tiny, auto_retry=True, attempts=3)
    m.start()
    drive(m)
    assert states(m)[-2:] == [State.RETRYING, State.FAILED]
    assert m.failure.is_oom and "No smaller plan" in m.message and not m.running


def test_retries_are_bounded(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_MAX_LAYERS", "0")
    monkeypatch.setenv("FAKE_KCPP_OOM_MODE", "clean")
    # a "smaller" plan that is the same plan: every attempt runs out of memory again
    monkeypatch.setattr(lifecycle, "smaller_plan", lambda model, rig, settings, plan, f: settings)
    m = machine(tiny, auto_retry=True, attempts=2)
    m.start()
    drive(m)
    assert m.state is State.FAILED and m.failure.is_oom
    assert states(m).count(State.STARTING) == 2 and states(m).count(State.RETRYING) == 1


def test_no_retry_without_auto_retry_until_asked(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_MAX_LAYERS", "0")
    monkeypatch.setenv("FAKE_KCPP_OOM_MODE", "segv")
    m = machine(tiny)
    m.start()
    drive(m)
    assert m.state is State.FAILED and State.RETRYING not in states(m)
    assert m.retry()  # the user's "Retry with a smaller plan"
    drive(m)
    try:
        assert m.state is State.READY and m.plan.gpus[0].layers == 0
    finally:
        m.stop()


def test_benchmark_on_the_worker_recorded_once(tiny, monkeypatch):
    recorded = []
    monkeypatch.setattr(lifecycle, "record", recorded.append)
    m = machine(tiny)
    m.start()
    drive(m)
    try:
        t0 = time.perf_counter()
        m.benchmark(64, 16)
        assert time.perf_counter() - t0 < 0.05 and m.state is State.BENCHMARKING
        drive(m, lambda m: m.state is not State.BENCHMARKING)
        res = m.history[-1].info["result"]
        assert m.state is State.READY and res.gen_tokens == 16 and res.gen_tokens_per_s > 0
        for _ in range(3):
            m.poll()
        assert recorded == [res]
    finally:
        m.stop()


def test_server_death_after_ready_fails_with_a_reason(tiny):
    m = machine(tiny)
    m.start()
    drive(m)
    m.launch.process.proc.kill()
    m.launch.process.proc.wait(10)
    drive(m, lambda m: m.done, timeout=10)
    assert m.state is State.FAILED and "SIGKILL" in m.failure.message


def test_a_gpu_plan_on_a_build_without_cuda_warns(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_NO_CUDA", "1")
    monkeypatch.setenv("FAKE_KCPP_BUFFERS", '{"CUDA0": [1, 1, 1], "CUDA1": [1, 1, 1]}')
    this_pc = dataclasses.replace(load_rig(demo_rig_path()), simulated=False)
    m = machine(tiny, rig=this_pc)
    m.start()
    drive(m)
    m.stop()
    assert m.outcome.ok and m.outcome.warnings == [NO_CUDA]
    assert m.outcome.comparison[0].actual_bytes is None and m.outcome.comparison[-1].actual_bytes == 6 << 20
    sim = machine(tiny)
    sim.start()
    drive(sim)
    sim.stop()
    assert sim.outcome.warnings == ["This plan is for another PC (simulated rig Phoenix Cluster): its GPUs are not "
                                    "in this computer."]


def test_missing_engine_library_is_not_blamed_on_the_model(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_NO_LIBRARY", "1")
    m = machine(tiny)
    m.start()
    drive(m)
    f = m.failure
    assert m.state is State.FAILED and f.kind == "library"
    assert "koboldcpp_cublas.so" in f.message and "model file" not in f.message
    w = classify(["FileNotFoundError: Could not find module 'C:\\kcpp\\koboldcpp_default.dll' (or one of its "
                  "dependencies). Try using the full path with constructor syntax."], 1, True)
    assert w.kind == "library" and "koboldcpp_default.dll" in w.message


def test_an_interrupt_in_the_middle_of_a_start_still_stops_everything(tiny, monkeypatch):
    """Ctrl-C or SIGTERM (KeyboardInterrupt) can land while the engine is being started: the process exists,
    the machine is still 'starting'. stop() must end it (it raised IllegalTransition: starting -> stopping)."""
    import psutil

    from phoenix_gui.backends.launch import Launch

    real_start = Launch.start

    def start_then_interrupted(self, *a, **kw):
        real_start(self, *a, **kw)
        raise KeyboardInterrupt  # the signal arrives just after the process was spawned

    monkeypatch.setattr(Launch, "start", start_then_interrupted)
    m = machine(tiny)
    with pytest.raises(KeyboardInterrupt):
        m.start()
    assert m.state is State.STARTING
    pid = m.launch.process.pid
    assert psutil.pid_exists(pid)
    m.stop()
    assert m.state is State.STOPPED and m.failure.kind == "cancelled"
    assert gone([pid])


def test_a_speed_koboldcpp_reports_as_zero_is_measured_from_the_request(tiny, monkeypatch):
    """koboldcpp's /api/extra/perf says 0 tokens/s when a token's time rounds to 0 ms (a tiny model on an idle
    fast CPU; seen once in a clean CI run): the benchmark then times the request itself, never reports 0."""
    monkeypatch.setenv("FAKE_KCPP_TIMER_ZERO", "1")
    m = machine(tiny)
    m.start()
    try:
        drive(m)
        assert m.state is State.READY, m.failure
        la = m.launch
        gen = la.backend.generate(la.host, la.port, "Hello there", 8, 512)
        assert gen.gen_tokens == 8 and gen.gen_tokens_per_s > 0
        m.benchmark(n_prompt=64, n_gen=8)
        drive(m, until=lambda m: m.state is not State.BENCHMARKING)
        assert m.history[-1].info["result"].gen_tokens_per_s > 0
    finally:
        m.stop()
