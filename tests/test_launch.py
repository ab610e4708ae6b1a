"""Launching real servers: llama-server (real, CPU) on a tiny generated model, and koboldcpp's
documented behaviour through tests/fake_koboldcpp.py."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from phoenix_gui.backends.bench import history
from phoenix_gui.backends.diagnose import classify
from phoenix_gui.backends.launch import smaller_plan
from phoenix_gui.backends.processes.ports import port_free
from phoenix_gui.backends.lifecycle import LaunchMachine, State
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.processes.process import engine_version
from phoenix_gui.engines.koboldcpp.server import KoboldCpp
from phoenix_gui.engines.llama_server.server import LlamaServer
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.hardware.rig import GIB, Rig, SystemInfo
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.planner import PlanSettings, make_plan
from machine_helpers import drive, gone  # noqa: F401

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny model dir ü")
    return write_skeleton("tiny-llama-f16", d / "tiny model.gguf", random_data=True)


def cpu_rig():
    return Rig("this PC", [], SystemInfo(16 * GIB, 12 * GIB, 2, 2, 20.0, "table"))


def llama_machine(tiny, port=None, **kw):
    model = read_model(tiny)
    s = PlanSettings(context=2048, backend="llama-server", port=port or free_port(), **kw)
    plan = make_plan(model, cpu_rig(), s)
    return LaunchMachine(plan, cpu_rig(), model, str(tiny)), model, plan


def test_llama_server_launch_ready_bench_metrics_stop(tiny):
    m, model, plan = llama_machine(tiny)
    lines = []
    m.on_lines(lines.extend)
    m.start()
    drive(m, timeout=120)
    assert m.state is State.READY, m.failure
    out, la = m.outcome, m.launch
    assert out.ok and out.ready_s > 0 and la.log_path.exists()
    assert out.warnings == []  # a CPU plan on a CPU server is as planned
    cpu = out.comparison[-1]
    assert cpu.actual_bytes is not None and abs(cpu.actual_bytes - cpu.predicted_bytes) < 16 << 20
    m.benchmark(n_prompt=128, n_gen=32)
    assert m.state is State.BENCHMARKING
    drive(m, lambda m: m.state is not State.BENCHMARKING, timeout=120)
    assert m.state is State.READY
    res = m.history[-1].info["result"]
    assert res.gen_tokens == 32 and res.gen_tokens_per_s > 0 and res.prompt_tokens_per_s > 0
    assert abs(res.prompt_tokens - 128) <= 8
    assert [r.gen_tokens for r in history(res.fingerprint)] == [32]  # recorded once
    t = la.backend.throughput(la.host, la.port)
    assert t is not None and t.gen_tokens_per_s and t.gen_tokens_per_s > 0
    pids = la.process.tree_pids()
    m.stop()
    assert m.state is State.STOPPED and la.process.poll() is not None
    assert gone(pids) and port_free(la.host, la.port)
    assert any("listening" in line for line in lines)


def test_port_in_use_is_caught_before_launch_and_from_the_real_log(tiny):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        m, _, _ = llama_machine(tiny, port=port)
        m.start()
        assert m.state is State.FAILED and m.launch.process is None
        assert m.failure.kind == "port" and str(port) in m.failure.message
        # the real server's own complaint, when something grabs the port between check and start
        m, _, _ = llama_machine(tiny, port=port)
        m.launch.preflight = lambda: None
        m.start()
        drive(m, lambda m: m.done)
    assert m.state is State.FAILED and m.failure.kind == "port"


def test_missing_model(tiny, tmp_path):
    m, _, _ = llama_machine(tiny)
    m.launch.model_path = str(tmp_path / "gone.gguf")
    m.start()
    assert m.failure.kind == "model" and "does not exist" in m.failure.message
    m, _, _ = llama_machine(tiny)
    argv = m.launch.command.argv
    argv[argv.index("-m") + 1] = str(tmp_path / "gone.gguf")
    m.launch.preflight = lambda: None
    m.start()
    drive(m, lambda m: m.done)
    assert m.state is State.FAILED and m.failure.kind == "model"


def test_server_killed_mid_run_is_reported(tiny):
    m, _, _ = llama_machine(tiny)
    m.start()
    drive(m, timeout=120)
    assert m.state is State.READY and m.poll() is State.READY
    os.kill(m.launch.process.pid, signal.SIGKILL)
    m.launch.process.proc.wait(10)
    m.poll()
    assert m.state is State.FAILED and not m.running
    f = m.failure
    assert f is not None and f.kind == "signal" and "SIGKILL" in f.message
    m.stop()


def test_cancel_a_slow_load(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_LOAD_S", "30")
    m = kobold_machine(tiny)
    m.start()
    m.poll()
    assert m.state is State.LOADING and m.running
    t0 = time.monotonic()
    m.cancel()
    assert time.monotonic() - t0 < 15
    assert m.state is State.STOPPED and m.message == "Loading was cancelled."
    assert "cancelled" in m.outcome.failure.message
    assert m.launch.process.poll() is not None and not m.running
    assert [(t.old, t.new) for t in m.history[-2:]] == [(State.LOADING, State.STOPPING), (State.STOPPING, State.STOPPED)]


def kobold_machine(tiny, settings=None, rig=None, **kw):
    rig = rig or load_rig(demo_rig_path())
    model = read_model(tiny)
    s = settings or PlanSettings(context=2048, port=free_port(), tensor_split=(1, 1, 1))
    plan = make_plan(model, rig, s)
    return LaunchMachine(plan, rig, model, str(tiny), exe=FAKE, **kw)


def test_koboldcpp_launch_perf_and_graceful_shutdown(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_BUFFERS", '{"CUDA0": [0.12, 0.5, 6.0], "CUDA1": [0.1, 0.25, 6.0], "CPU": [0.06, 0, 2.0]}')
    m = kobold_machine(tiny)
    la = m.launch
    assert la.command.argv[:2] == [sys.executable, FAKE]
    m.start()
    drive(m)
    assert m.state is State.READY, m.failure
    out = m.outcome
    assert [c.actual_bytes is not None for c in out.comparison][:2] == [True, True]
    assert out.warnings == []  # the layers reached the GPUs
    assert any(line == "..." for line in la.process.lines)  # \r-terminated progress became lines
    b = KoboldCpp()
    r = b.generate(la.host, la.port, "hello " * 100, 64, 2048)
    assert r.gen_tokens == 64 and r.gen_tokens_per_s > 0
    t = b.throughput(la.host, la.port)
    assert t.generations == 1 and t.gen_tokens_per_s > 0
    m.stop()
    assert la.process.proc.returncode == 0  # /api/extra/shutdown, not a signal


@pytest.mark.parametrize("mode", ["segv", "clean"])
def test_koboldcpp_oom_is_diagnosed(tiny, monkeypatch, mode):
    monkeypatch.setenv("FAKE_KCPP_MAX_LAYERS", "0")
    monkeypatch.setenv("FAKE_KCPP_OOM_MODE", mode)
    m = kobold_machine(tiny)
    m.start()
    drive(m)
    assert m.state is State.FAILED and m.failure.is_oom
    f = m.failure
    assert f.device == 0 and f.requested_mib == pytest.approx(2311.25)
    assert f.message.startswith("Out of memory on GTX 1050 Ti")
    if mode == "segv":
        assert f.exit_code == -signal.SIGSEGV


def test_death_by_signal_during_load_counts_as_oom():
    f = classify(["Loading Text Model: m.gguf", "load_tensors: offloaded 65/65 layers to GPU"], -11, during_load=True)
    assert f.kind == "oom" and "SIGSEGV" in f.message


def test_smaller_plan_moves_layers_off_the_failing_gpu():
    from phoenix_gui.model import preset_model_info

    m = preset_model_info("qwen2.5-32b-instruct-q4_k_m")
    rig = load_rig(demo_rig_path())
    s = PlanSettings(context=4096, gpulayers=40, tensor_split=(1.5, 4.5, 3))
    plan = make_plan(m, rig, s)
    f = classify(["allocating 600.00 MiB on device 0: cudaMalloc failed: out of memory"], 1, True,
                 device_names=[d.name for d in plan.gpus])
    s2 = smaller_plan(m, rig, s, plan, f)
    from phoenix_gui.planner.budgets import Budgets
    from phoenix_gui.planner.recovery import fits

    p2 = make_plan(m, rig, s2)
    assert p2.gpus[0].layers < plan.gpus[0].layers  # the card that failed holds less
    # and the retry is a plan the planner's ledger, corrected by what the failure showed, says fits
    assert fits(rig, p2, Budgets.from_settings(s2)) and all(d.fits for d in p2.devices)


def test_oom_retry_launches_a_smaller_plan(tiny, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_MAX_LAYERS", "0")  # nothing fits on the first GPU
    monkeypatch.setenv("FAKE_KCPP_OOM_MODE", "clean")
    m = kobold_machine(tiny, auto_retry=True, attempts=3)
    attempts, retries = [], []

    def told(old, new, info):
        if new is State.PREFLIGHT:
            attempts.append([d.layers for d in info["plan"].gpus])
        if new is State.RETRYING:
            retries.append(info["settings"])

    m.on_transition(told)
    m.start()
    try:
        drive(m)
        assert m.state is State.READY, m.failure
        assert len(attempts) == 2 and attempts[0][0] == 1 and attempts[-1][0] == 0
        assert sum(attempts[-1]) == 3  # the layer moved to another GPU, none was dropped
        assert len(retries) == 1 and retries[0] == m.plan.settings  # listeners got the new settings
    finally:
        m.stop()


def test_no_orphan_when_phoenix_is_killed(tiny, tmp_path):
    """Phoenix dies by SIGKILL (no cleanup code runs): the server goes with it."""
    script = tmp_path / "phoenix_like.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from phoenix_gui.backends.processes.process import ServerProcess\n"
        f"sp = ServerProcess([sys.executable, {FAKE!r}, '--model', {str(tiny)!r}, '--port', '{free_port()}', "
        "'--host', '127.0.0.1']).start()\n"
        "print(sp.pid, flush=True)\n"
        "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(p.stdout.readline())
    assert psutil.pid_exists(child)
    p.kill()
    p.wait()
    assert gone([child], timeout=10)


def test_no_orphan_on_normal_exit(tiny, tmp_path):
    script = tmp_path / "phoenix_exit.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from phoenix_gui.backends.processes.process import ServerProcess\n"
        f"sp = ServerProcess([sys.executable, {FAKE!r}, '--model', {str(tiny)!r}, '--port', '{free_port()}']).start()\n"
        "print(sp.pid, flush=True)\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert gone([int(out.stdout.split()[0])], timeout=10)


def test_llama_server_backend_finds_the_packaged_binary():
    exe = LlamaServer().find()
    assert exe and Path(exe).exists()
    assert engine_version(LlamaServer(), exe)


def _phoenix(*args, env=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "phoenix_gui", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_cli_bench_json_on_the_real_llama_server(tiny, data_dir):
    import json

    r = _phoenix("bench", str(tiny), "--backend", "llama-server", "--ctx", "2048", "--port", str(free_port()), "--json",
                 "--prompt-tokens", "64", "--gen-tokens", "16", "--repeats", "3", env={"PHOENIX_DATA_DIR": str(data_dir)})
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    for k in ("ready_s", "prompt_tokens_per_s", "gen_tokens_per_s", "devices", "argv"):
        assert k in d
    assert d["gen_tokens_per_s"] > 0 and d["devices"][0]["name"] == "CPU / RAM" and d["devices"][0]["actual_bytes"]
    reps = d["gen_repeats_tokens_per_s"]  # three real generations on the one load: their mean, their spread
    assert len(reps) == 3 and d["gen_tokens_per_s"] == pytest.approx(sum(reps) / 3, abs=0.02) and d["spread"] is not None
    assert (data_dir / "bench-history.jsonl").exists()


def test_cli_bench_koboldcpp_stand_in(tiny, data_dir):
    import json

    r = _phoenix("bench", str(tiny), "--rig", str(demo_rig_path()), "--exe", FAKE, "--ctx", "2048", "--split", "1", "1", "1",
                 "--port", str(free_port()), "--json", env={"PHOENIX_DATA_DIR": str(data_dir),
                                                            "FAKE_KCPP_BUFFERS": '{"CUDA0": [1, 1, 1]}'})
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["gen_tokens_per_s"] > 0 and d["argv"][1] == FAKE and "--usecuda" in d["argv"]
    assert d["devices"][0]["actual_bytes"] == 3 << 20


def test_cli_bench_repeats_out_of_range_is_one_sentence(tiny):
    for bad in ("0", "21", "three"):
        r = _phoenix("bench", str(tiny), "--backend", "llama-server", "--repeats", bad)
        assert r.returncode == 2 and "--repeats" in r.stderr and "Traceback" not in r.stderr


def test_cli_launch_port_in_use_is_one_sentence(tiny):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = _phoenix("launch", str(tiny), "--backend", "llama-server", "--port", str(s.getsockname()[1]))
    assert r.returncode == 2 and "already in use" in r.stderr and "Traceback" not in r.stderr


def _with(m, **values):
    """Settings past any earlier check (the CLI and the wizard refuse these first): preflight is the last line."""
    for k, v in values.items():
        object.__setattr__(m.launch.settings, k, v)
    return m


@pytest.mark.parametrize("host, port, says", [
    ("127.0.0.1", 70000, "between 1 and 65535"),
    ("127.0.0.1", 0, "between 1 and 65535"),
    ("127.0.0.1", -5, "between 1 and 65535"),
    ("127.0.0.1 evil", 5001, "is not a host name or address"),
    ("local host", 5001, "is not a host name or address"),
    ("127.0.0.1\r\ncalc.exe", 5001, "is not a host name or address"),
    ("no-such-host.invalid", 5001, "resolve"),
    ("192.0.2.1", 5001, "not an address of this computer"),  # TEST-NET-1: never a local address
])
def test_bad_host_or_port_is_one_precise_sentence_never_port_in_use(tiny, host, port, says):
    m, _, _ = llama_machine(tiny)
    _with(m, host=host, port=port)
    m.start()
    assert m.state is State.FAILED and m.launch.process is None
    msg = m.failure.message
    assert says in msg or (says == "resolve" and "looked up" in msg), msg
    assert "in use" not in msg and "\n" not in msg and "\r" not in msg


def test_a_free_port_on_a_real_host_name_passes_preflight(tiny):
    m, _, _ = llama_machine(tiny)
    _with(m, host="localhost")
    assert m.launch.preflight() is None


def test_a_control_character_in_the_command_never_reaches_the_process(tiny, tmp_path):
    m, _, _ = llama_machine(tiny)
    argv = m.launch.command.argv
    argv[argv.index("-m") + 1] = str(tiny) + "\x00x"
    m.launch.model_path = None
    m.start()
    assert m.state is State.FAILED and m.launch.process is None
    assert m.failure.kind == "input" and "control character" in m.failure.message


@pytest.mark.parametrize("args, says", [(["--port", "70000"], "65535"), (["--host", "a b"], "host")])
def test_cli_launch_bad_port_or_host_is_one_sentence(tiny, args, says):
    r = _phoenix("launch", str(tiny), "--backend", "llama-server", *args, timeout=60)
    assert r.returncode == 2 and says in r.stderr and "in use" not in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "unexpected error" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_host_is_compared_by_the_buffers_the_engine_logs(skeletons):
    """A CPU-only llama-server with mmap logs the mapped span of the file plus its repacked Q4 copies
    (7437 MiB for Qwen2.5-7B Q4_K_M, whose host tensors are 4460 MiB): the prediction must count the same
    buffers, or the monitor shows a 3 GB 'error' that is none (logged lines from the real engine)."""
    from phoenix_gui.backends.launch import compare
    from phoenix_gui.backends.logparse import parse_log
    from phoenix_gui.hardware import demo_rig_path, load_rig
    from phoenix_gui.model import read_model
    from phoenix_gui.planner import PlanSettings, make_plan

    rig = load_rig(demo_rig_path())
    m = read_model(skeletons("qwen2.5-7b-instruct-q4_k_m"))  # a real file: the mapped span needs tensor offsets
    plan = make_plan(m, rig, PlanSettings(context=4096, devices=(), gpulayers=0, backend="llama-server"))
    log = "\n".join([
        "load_tensors:   CPU_Mapped model buffer size =  4460.45 MiB",
        "load_tensors:   CPU_REPACK model buffer size =  2976.75 MiB",
        "llama_kv_cache:        CPU KV buffer size =   224.00 MiB",
        "sched_reserve:        CPU compute buffer size =   150.60 MiB",
    ])
    (cpu,) = [c for c in compare(plan, parse_log(log), rig) if c.name == "CPU / RAM"]
    assert abs(cpu.predicted_bytes - cpu.actual_bytes) < 0.03 * cpu.actual_bytes
