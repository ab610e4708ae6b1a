"""Phoenix against the real koboldcpp 1.115.1 (its CPU build, made once per machine by tests/kcpp_build.py).

What this build can show: its argument parser and .kcpps handling, its HTTP API, its console lines, the
buffers its llama.cpp logs on the CPU, and how it fails (missing model, port in use, missing library).
What it cannot (CUDA devices, CUDA out of memory) stays with tests/fake_koboldcpp.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phoenix_gui.backends.commandline import request_for, write_kcpps
from phoenix_gui.engines.koboldcpp.options import koboldcpp_command
from phoenix_gui.backends.kcpps import read_kcpps
from phoenix_gui.backends.launch import Launch
from phoenix_gui.backends.lifecycle import LaunchMachine, State
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.hardware.rig import GIB, MIB, Rig, SystemInfo
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.planner import PlanSettings, make_plan
from machine_helpers import drive, gone, ready

pytestmark = pytest.mark.engine
SEED = ["--usecuda", "0", "1", "2", "--gpulayers", "40", "--tensor_split", "1.5", "4.5", "3", "--contextsize", "4096"]


def cpu_rig() -> Rig:
    return Rig("this PC", [], SystemInfo(64 * GIB, 60 * GIB, 2, 2, 20.0, "table"))


def kcpp(script: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout,
                          errors="replace")


def exported(script: Path, out: Path, *args: str) -> dict:
    """What koboldcpp itself makes of these arguments: its parsed namespace, written by --exportconfig."""
    r = kcpp(script, *args, "--exportconfig", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_skeleton("tiny-llama-f16", tmp_path_factory.mktemp("m") / "tiny model.gguf", random_data=True)


# --- .kcpps export and import through koboldcpp's own parser ---

@pytest.mark.parametrize("settings", [
    dict(context=8192, tensor_split=(1, 2, 1), gpulayers=20, cache_type_k="q8_0", cache_type_v="q8_0",
         flash_attn=False, batch=256, threads=2, parallel=3, overrides=((r"blk\.1\.ffn_up", "CPU"), ("output", "CUDA1"))),
    dict(context=4096, moecpu=3, lowvram=True, use_mmap=True, split_mode="row"),
])
def test_kcpps_export_loads_as_the_plan_intended(kcpp_script, tiny, tmp_path, settings):
    rig = load_rig(demo_rig_path())
    plan = make_plan(read_model(tiny), rig, PlanSettings(port=free_port(), **settings))
    ours = json.loads(write_kcpps(plan, rig, tiny, tmp_path / "phoenix.kcpps").read_text())
    parsed = exported(kcpp_script, tmp_path / "parsed.kcpps", "--config", str(tmp_path / "phoenix.kcpps"))
    assert {k: parsed.get(k, "missing") for k in ours} == ours
    # the values are the plan's, and the command line Phoenix shows means the same to koboldcpp
    assert parsed["gpulayers"] == plan.gpulayers and parsed["contextsize"] == plan.context
    assert parsed["tensor_split"] == plan.tensor_split and parsed["batchsize"] == plan.settings.batch
    argv = koboldcpp_command(request_for(plan, rig, tiny)).argv[1:]
    by_cli = exported(kcpp_script, tmp_path / "cli.kcpps", *argv)
    # the CLI spells these differently (port_param is the positional port, which the CLI does not use)
    keys = [k for k in ours if k not in ("usecuda", "quiet", "threads", "port_param")]
    assert {k: by_cli[k] for k in keys} == {k: ours[k] for k in keys}


def test_import_of_a_config_the_real_koboldcpp_exported(kcpp_script, tmp_path):
    data = exported(kcpp_script, tmp_path / "seed.kcpps", *SEED)
    assert len(data) > 100  # every dest, as 1.115.1 writes them
    imp = read_kcpps(tmp_path / "seed.kcpps")
    s = imp.settings
    assert (s.gpulayers, s.tensor_split, s.context) == (40, (1.5, 4.5, 3.0), 4096)
    assert (s.batch, s.cache_type_k, s.flash_attn, s.port) == (512, "f16", True, 5001)
    assert imp.gpu_ids is None  # ids with a split do not mask (koboldcpp.md §6.2)
    assert imp.model_path is None and not any("autofit" in n for n in imp.notes)
    # the engine's own fit: said plainly, not predicted
    exported(kcpp_script, tmp_path / "fit.kcpps", *SEED, "--autofit", "--parallelrequests", "4")
    imp = read_kcpps(tmp_path / "fit.kcpps")
    assert any("cannot predict" in n for n in imp.notes) and imp.settings.parallel == 4


# --- a whole launch through the one launch path ---

def test_launch_ready_generate_benchmark_stop(kcpp_script, tiny, tmp_path):
    model = read_model(tiny)
    plan = make_plan(model, cpu_rig(), PlanSettings(context=512, batch=64, threads=2, port=free_port()))
    m = LaunchMachine(plan, cpu_rig(), model, str(tiny), exe=str(kcpp_script), log_dir=tmp_path)
    with ready(m) as la:
        text = "\n".join(la.process.lines)
        ns = re.search(r"^Namespace\((.*)\)$", text, re.M)
        assert ns, "koboldcpp printed no parsed namespace"
        assert "contextsize=512," in ns.group(1) and "gpulayers=0," in ns.group(1) and "batchsize=64," in ns.group(1)
        gen = la.backend.generate(la.host, la.port, "Hello there", 8, 512)
        assert gen.gen_tokens == 8 and gen.gen_tokens_per_s > 0
        tp = la.backend.throughput(la.host, la.port)
        # koboldcpp times tokens in whole ms: a tiny model on a fast CPU reads "too fast to time" (None), never 0
        assert tp.generations >= 1 and (tp.gen_tokens_per_s is None or tp.gen_tokens_per_s > 0), tp
        m.benchmark(n_prompt=64, n_gen=8)
        drive(m, until=lambda m: m.state is not State.BENCHMARKING, timeout=180)
        assert m.state is State.READY and "result" in m.history[-1].info, m.history[-1].info
        assert m.history[-1].info["result"].gen_tokens_per_s > 0


# --- the buffers its llama.cpp logs, next to the plan ---

@pytest.fixture(scope="module")
def qwen7b(tmp_path_factory):
    return write_skeleton("qwen2.5-7b-instruct-q4_k_m", tmp_path_factory.mktemp("q") / "qwen7b.gguf")


@pytest.mark.parametrize("batch", [512, 256])
def test_predicted_buffers_match_its_log(kcpp_script, qwen7b, batch):
    from phoenix_gui.backends.probe import probe_koboldcpp

    s = PlanSettings(context=4096, batch=batch, use_mmap=True, threads=2, port=free_port())
    plan = make_plan(read_model(qwen7b), cpu_rig(), s)
    rep, log = probe_koboldcpp(koboldcpp_command(request_for(plan, cpu_rig(), qwen7b, exe=kcpp_script)).argv)
    cpu = plan.cpu
    assert rep.n_ctx == plan.kv_cells == 4352
    assert rep.mib("cpu", "model") == pytest.approx(cpu.weights_bytes / MIB, abs=0.01)
    assert rep.mib("cpu", "KV") == pytest.approx(cpu.kv_bytes / MIB, abs=0.01)
    logged = rep.mib("cpu", "compute") + rep.mib("cpu", "output")
    assert set(_logged_host(rep)) == {"CPU_Mapped"}  # with mmap koboldcpp never repacks (it would hold both)
    # 311.00 MiB at 512 and 155.50 at 256: the logits of the whole ubatch (EngineProfile.logits_full_ubatch)
    assert rep.mib("cpu", "compute") == {512: 311.0, 256: 155.5}[batch]
    assert logged <= cpu.compute_bytes / MIB <= logged * 1.10 + 4, (cpu.compute_bytes / MIB, logged)


# --- failures, diagnosed from its real messages ---

def _fail(kcpp_script, tiny, tmp_path, model_path=None, port=None, exe=None):
    model = read_model(tiny)
    plan = make_plan(model, cpu_rig(), PlanSettings(context=512, batch=64, threads=1, port=port or free_port()))
    la = Launch(plan, cpu_rig(), model, str(model_path or tiny), exe=str(exe or kcpp_script), log_dir=tmp_path)
    la.start()  # no preflight: the engine itself must find the fault
    end = time.monotonic() + 120
    while (code := la.process.poll()) is None:
        assert time.monotonic() < end, "koboldcpp neither failed nor stopped"
        time.sleep(0.1)
    la.process.wait_output()
    f = la.failed(code, during_load=True)
    la.stop(2)
    assert gone([la.process.pid])
    return f, "\n".join(la.process.lines)


def test_missing_model(kcpp_script, tiny, tmp_path):
    f, log = _fail(kcpp_script, tiny, tmp_path, model_path=tmp_path / "gone.gguf")
    assert f.kind == "model", (f, log[-800:])


def test_port_in_use(kcpp_script, tiny, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        f, log = _fail(kcpp_script, tiny, tmp_path, port=s.getsockname()[1])
    assert f.kind == "port", (f, log[-800:])


def test_missing_library(kcpp_script, tiny, tmp_path):
    copy = tmp_path / "kcpp"
    shutil.copytree(kcpp_script.parent, copy, ignore=shutil.ignore_patterns("*.so", "*.o", "*.a"))
    f, log = _fail(kcpp_script, tiny, tmp_path, exe=copy / "koboldcpp.py")
    assert f.kind == "library" and "koboldcpp_default.so" in f.message, (f, log[-800:])


# --- the fake (tests/fake_koboldcpp.py) against the real one, where both can speak ---

FAKE = Path(__file__).with_name("fake_koboldcpp.py")
# the console lines Phoenix reads, and the stream each comes on (koboldcpp.md §7.1)
SHAPES = {
    "stdout": [r"^Welcome to KoboldCpp - Version 1\.115\.1$", r"^Initializing dynamic library: koboldcpp_\w+\.so$",
               r"^Namespace\(.*contextsize=\d+.*\)$", r"^Loading Text Model: \S.*$", r"^Load Text Model OK: True$",
               r"^Please connect to custom endpoint at http://\S+$",
               r"^\[\d\d:\d\d:\d\d\] CtxLimit:\d+/\d+, Init:[\d.]+s, Processed:\d+ in [\d.]+s \([\d.]+T/s\), "
               r"Generated:\d+/\d+ in [\d.]+s \([\d.]+T/s\), Total:[\d.]+s$"],
    "stderr": [r"^load_tensors: offloaded \d+/\d+ layers to GPU$", r"^load_tensors:\s+CPU\w* model buffer size =\s+[\d.]+ MiB$",
               r"^llama_context: n_ctx\s+= \d+$", r"^llama_context: n_batch\s+= \d+$",
               r"^llama_kv_cache:\s+CPU KV buffer size =\s+[\d.]+ MiB$",
               r"^sched_reserve:\s+CPU compute buffer size =\s+[\d.]+ MiB$"],
}
FAILED_SHAPES = {"stdout": [r"^Cannot find text model file: \S.*$"], "stderr": []}


def _serve_and_ask(argv, env, tmp: Path, port: int) -> tuple[dict, dict[str, str]]:
    """Start a server, call the API fields Phoenix uses, stop it; the answers and both streams."""
    from phoenix_gui.engines.http import base_url, get_json, post_json, request

    out, err = open(tmp / "out.txt", "w"), open(tmp / "err.txt", "w")
    proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    url = base_url("127.0.0.1", port)
    answers = {}
    try:
        end = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < end, (tmp / "out.txt").read_text()[-500:]
            try:
                answers["version"] = get_json(url + "/api/extra/version", timeout=2)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
        answers["perf0"] = get_json(url + "/api/extra/perf")
        answers["model"] = get_json(url + "/api/v1/model")
        answers["maxctx"] = get_json(url + "/api/extra/true_max_context_length")
        answers["tokencount"] = post_json(url + "/api/extra/tokencount", {"prompt": "Hello there"})
        answers["generate"] = post_json(url + "/api/v1/generate", {"prompt": "Hello there", "max_length": 4,
                                                                     "temperature": 0.01, "top_k": 1})
        answers["perf"] = get_json(url + "/api/extra/perf")
        request(url + "/api/extra/shutdown", {}, timeout=3)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        out.close()
        err.close()
    return answers, {s: (tmp / f"{s[3:]}.txt").read_text() for s in ("stdout", "stderr")}


def _shape_of(v):
    return "number" if isinstance(v, (int, float)) and not isinstance(v, bool) else type(v).__name__


def _missing_shapes(streams: dict[str, str], shapes) -> list[str]:
    lines = {s: [ln.strip() for ln in re.split(r"[\r\n]+", t)] for s, t in streams.items()}
    return [f"{s}: {p}" for s, ps in shapes.items() for p in ps if not any(re.match(p, ln) for ln in lines[s])]


def test_fake_and_real_agree_where_they_overlap(kcpp_script, tiny, tmp_path):
    # flags: every spelling the fake accepts is one the real parser documents
    fake_src = FAKE.read_text()
    fake_flags = set(re.findall(r'"(--?[\w-]+)"', "\n".join(re.findall(r"add_argument\((.*)\)", fake_src))))
    real_help = kcpp(kcpp_script, "--help").stdout
    assert fake_flags and not {f for f in fake_flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", real_help)}
    runs = {}
    for name, exe, env in (("real", kcpp_script, {}), ("fake", FAKE, {"FAKE_KCPP_BUFFERS": '{"CPU": [20, 4, 2]}'})):
        port = free_port()
        model = read_model(tiny)
        plan = make_plan(model, cpu_rig(), PlanSettings(context=512, batch=64, threads=2, port=port))
        argv = koboldcpp_command(request_for(plan, cpu_rig(), tiny, exe=exe)).argv  # the same command line for both
        (tmp_path / name).mkdir()
        runs[name] = _serve_and_ask(argv, {**os.environ, **env}, tmp_path / name, port)
    (real, real_streams), (fake, fake_streams) = runs["real"], runs["fake"]
    # API: every field the fake serves, the real one serves with the same kind of value
    for call, answer in fake.items():
        got = real[call]
        if call == "generate":
            answer, got = answer["results"][0], got["results"][0]
        diff = {k: (_shape_of(v), _shape_of(got.get(k))) for k, v in answer.items()
                if k not in got or _shape_of(v) != _shape_of(got[k])}
        assert not diff, (call, diff)
    assert real["perf"]["total_gens"] == fake["perf"]["total_gens"] == 1
    # console: the lines Phoenix reads have the same shape, on the same stream
    assert _missing_shapes(fake_streams, SHAPES) == []
    assert _missing_shapes(real_streams, SHAPES) == []
    # and a missing model fails the same way in both
    for exe in (kcpp_script, FAKE):
        r = subprocess.run([sys.executable, str(exe), "--skiplauncher", "--usecpu", "--model", str(tmp_path / "no.gguf"),
                            "--port", str(free_port())], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (exe, r.returncode, r.stdout[-400:])
        assert _missing_shapes({"stdout": r.stdout, "stderr": r.stderr}, FAILED_SHAPES) == [], exe


# --- two devices on a CPU build: an RPC device on loopback (koboldcpp --rpcmode host) ---

@pytest.fixture(scope="module")
def rpc_target(kcpp_script):
    port = free_port()
    host = subprocess.Popen([sys.executable, str(kcpp_script), "--skiplauncher", "--rpcmode", "host", "--rpchost",
                             "127.0.0.1", "--rpcport", str(port), "--usecpu"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    end = time.monotonic() + 60
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert host.poll() is None and time.monotonic() < end, "the RPC host did not start"
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    host.terminate()
    host.wait(10)
    assert gone([host.pid])


def _rpc_rig():
    from phoenix_gui.hardware.rig import GpuInfo

    rpc = GpuInfo(index=0, name="RPC0", uuid="", pci_bus_id="rpc", total_bytes=64 * GIB, free_bytes=60 * GIB,
                  used_bytes=0, compute_capability=(9, 0), architecture="cpu", bandwidth_gbs=20.0,
                  bandwidth_source="rig file")
    return Rig("this PC", [rpc], SystemInfo(64 * GIB, 60 * GIB, 2, 2, 20.0, "table"))


def test_tensor_overrides_on_a_second_device(kcpp_script, qwen7b, rpc_target):
    from phoenix_gui.backends.probe import probe_koboldcpp
    from phoenix_gui.engines.koboldcpp.options import koboldcpp_over_rpc

    ot = ((r"blk\.(1[4-9]|2[0-7])\.ffn_(up|down|gate)", "CPU"),)
    s = PlanSettings(context=4096, batch=512, use_mmap=True, threads=2, overrides=ot, port=free_port())
    plan = make_plan(read_model(qwen7b), _rpc_rig(), s)
    argv = koboldcpp_over_rpc(koboldcpp_command(request_for(plan, _rpc_rig(), qwen7b, exe=kcpp_script)).argv, rpc_target)
    assert "--overridetensors" in argv
    rep, log = probe_koboldcpp(argv)
    assert "Override Tensor: blk\\.(1[4-9]|2[0-7])\\.ffn_(up|down|gate) to CPU" in log
    gpu, cpu = plan.gpus[0], plan.cpu
    assert rep.mib("rpc0", "model") == pytest.approx(gpu.weights_bytes / MIB, abs=0.01)  # the moved FFNs left
    assert rep.mib("rpc0", "KV") == pytest.approx(gpu.kv_bytes / MIB, abs=0.01)  # KV stays with its layer
    # with mmap the host logs the mapped span of the file: token_embd up to the last moved FFN, the RPC
    # device's tensors in between included (4034.08 MiB where the host's own tensors are 1955.62)
    assert _logged_host(rep) == pytest.approx(_host_buffers(qwen7b, plan), abs=0.01)
    assert rep.mib("cpu", "model") > cpu.weights_bytes / MIB + 2000
    for key, dev in (("rpc0", gpu), ("cpu", cpu)):
        logged = rep.mib(key, "compute") + rep.mib(key, "output")
        assert logged <= dev.compute_bytes / MIB <= logged * 1.35 + 4, (key, dev.compute_bytes / MIB, logged)


def _host_buffers(path, plan) -> dict[str, float]:
    """The host's model buffers (MiB by buffer name) the plan's layout gives (planner/placement.py)."""
    from phoenix_gui.planner.placement import host_model_buffers, host_tensors

    s = plan.settings
    tensors = host_tensors(read_model(path), plan.assign, s.overrides if plan.gpus else ())
    # the RPC device has no pinned host buffer: only the profile's mmap rule decides about repacking
    bufs = host_model_buffers(tensors, mmap=s.mmap, repack_types=s.profile.repack_types(s.mmap, local_gpu=False))
    return {k: v / MIB for k, v in bufs.items()}


def _logged_host(rep) -> dict[str, float]:
    from phoenix_gui.backends.logparse import device_of_buffer

    return {b: v for (b, kind), v in rep.buffers.items() if kind == "model" and device_of_buffer(b) == "cpu"}


def test_partial_offload_maps_the_span_of_the_host_layers(kcpp_script, qwen7b, rpc_target):
    from phoenix_gui.backends.probe import probe_koboldcpp
    from phoenix_gui.engines.koboldcpp.options import koboldcpp_over_rpc

    s = PlanSettings(context=4096, batch=512, use_mmap=True, threads=2, gpulayers=15, port=free_port())
    plan = make_plan(read_model(qwen7b), _rpc_rig(), s)
    rep, log = probe_koboldcpp(koboldcpp_over_rpc(koboldcpp_command(request_for(plan, _rpc_rig(), qwen7b, exe=kcpp_script)).argv,
                                                  rpc_target))
    assert rep.offloaded == (15, 29) and plan.cpu.last_layer == 13
    assert _logged_host(rep) == pytest.approx(_host_buffers(qwen7b, plan), abs=0.01)
    assert rep.mib("rpc0", "model") == pytest.approx(plan.gpus[0].weights_bytes / MIB, abs=0.01)
    # the CPU's layers without the output layer: 3 n_ff + 4 n_embd (+ mask), one n_embd less than with it
    logged = rep.mib("cpu", "compute") + rep.mib("cpu", "output")
    assert logged <= plan.cpu.compute_bytes / MIB <= logged * 1.08 + 3, (plan.cpu.compute_bytes / MIB, logged)


def test_a_device_without_the_output_layer_needs_less_compute(kcpp_script, qwen7b, rpc_target):
    # every block on the RPC device, the output layer sent to the CPU: the device holds neither end
    from phoenix_gui.backends.probe import probe_koboldcpp
    from phoenix_gui.engines.koboldcpp.options import koboldcpp_over_rpc
    from phoenix_gui.planner.compute import ComputeInputs, device_compute

    s = PlanSettings(context=4096, batch=512, use_mmap=True, threads=2, overrides=((r"^output\.", "CPU"),),
                     port=free_port())
    plan = make_plan(read_model(qwen7b), _rpc_rig(), s)
    rep, log = probe_koboldcpp(koboldcpp_over_rpc(koboldcpp_command(request_for(plan, _rpc_rig(), qwen7b, exe=kcpp_script)).argv,
                                                  rpc_target))
    model = read_model(qwen7b)
    ci = ComputeInputs(n_ubatch=512, n_kv=plan.kv_cells, flash_attn=True, n_outputs=512)
    logged = rep.mib("rpc0", "compute")  # 136.26 MiB: 3 n_ff + 3 n_embd + the mask
    predicted = device_compute(model, ci, has_layers=True, has_output=False, gpu=True) / MIB
    assert logged <= predicted <= logged * 1.08 + 3, (predicted, logged)
    # the logits of the whole ubatch are computed where output.weight is: on the CPU
    assert rep.mib("cpu", "compute") >= model.n_vocab * 512 * 4 / MIB


def test_without_mmap_it_repacks_the_q4_k_weights(kcpp_script, qwen7b):
    from phoenix_gui.backends.probe import probe_koboldcpp

    plan = make_plan(read_model(qwen7b), cpu_rig(), PlanSettings(context=4096, threads=2, port=free_port()))
    assert not plan.settings.mmap  # koboldcpp's default
    rep, log = probe_koboldcpp(koboldcpp_command(request_for(plan, cpu_rig(), qwen7b, exe=kcpp_script)).argv)
    logged = _logged_host(rep)
    assert set(logged) == {"CPU", "CPU_REPACK"}
    assert logged == pytest.approx(_host_buffers(qwen7b, plan), abs=0.01)
    assert sum(logged.values()) == pytest.approx(plan.cpu.weights_bytes / MIB, abs=0.01)  # the same bytes, split


# --- the build cache itself (tests/kcpp_build.py), on a stand-in source tarball: no compiler run ---

def _tarball(tmp_path, recipe: str) -> Path:
    import tarfile

    src = tmp_path / "src" / "koboldcpp-x"
    src.mkdir(parents=True)
    (src / "koboldcpp.py").write_text("print('stand-in')\n")
    (src / "Makefile").write_text(f"koboldcpp_default:\n\t{recipe}\n")
    out = tmp_path / "kcpp.tar.xz"
    with tarfile.open(out, "w:xz") as tf:
        tf.add(src, arcname="koboldcpp-x")
    return out


def test_build_cache_is_keyed_locked_and_reused(tmp_path, monkeypatch):
    import threading

    import kcpp_build

    if kcpp_build.missing_tools():
        pytest.skip("no make")
    counter = tmp_path / "makes"
    monkeypatch.setattr(kcpp_build, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(kcpp_build, "TARBALL", _tarball(tmp_path, f"sleep 0.5; echo x >> {counter}; touch koboldcpp_default.so"))
    assert kcpp_build.built_tree() is None
    trees = []
    runs = [threading.Thread(target=lambda: trees.append(kcpp_build.build())) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert len(trees) == 2 and trees[0] == trees[1] and counter.read_text() == "x\n"  # one make for two callers
    assert trees[0].parent.name == "koboldcpp-" + kcpp_build.tarball_hash()[:16]
    assert kcpp_build.built_tree() == trees[0] and kcpp_build.build() == trees[0] and counter.read_text() == "x\n"


def test_a_failed_build_is_an_error_and_not_reused(tmp_path, monkeypatch):
    import kcpp_build

    if kcpp_build.missing_tools():
        pytest.skip("no make")
    monkeypatch.setattr(kcpp_build, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(kcpp_build, "TARBALL", _tarball(tmp_path, "touch koboldcpp_default.so; exit 3"))
    with pytest.raises(kcpp_build.BuildError, match=r"failed \(exit 2\); see .*build\.log"):
        kcpp_build.build()
    assert kcpp_build.built_tree() is None  # a half-built .so without the stamp is never used
