"""A cluster on loopback with the real koboldcpp 1.115.1 (CPU build): two `--rpcmode host` RPC servers on
127.0.0.1 ports stand for two other PCs, and a real koboldcpp main process uses them through Phoenix's plan
and its one launch path. The plan's weights and KV per RPC device equal the engine's RPC<i>[host:port]
buffer lines, generation works, and a node that is down, on a wrong port or killed mid-run gives one
sentence naming the PC with nothing left running. Only 127.0.0.1 is used."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from phoenix_gui.backends.commandline import request_for, write_kcpps
from phoenix_gui.engines.koboldcpp.options import koboldcpp_command
from phoenix_gui.backends.launch import Launch, logged_mib
from phoenix_gui.backends.lifecycle import LaunchMachine, State
from phoenix_gui.backends.logparse import parse_log
from phoenix_gui.backends.nodes import describe_node
from phoenix_gui.backends.probe import probe_koboldcpp
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.hardware.cluster import cluster_rig
from phoenix_gui.hardware.rig import RemoteNode
from phoenix_gui.hardware.rig import GIB, MIB, Rig, SystemInfo
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.planner import PlanSettings, make_plan
from machine_helpers import drive, gone, ready

pytestmark = pytest.mark.engine


def this_pc() -> Rig:
    """The main PC: no GPU (the CPU build has no CUDA), so offloaded layers go to the other PCs."""
    return Rig("this PC", [], SystemInfo(64 * GIB, 60 * GIB, 2, 2, 20.0, "table"))


def start_host(script: Path, port: int, log: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(script), "--skiplauncher", "--rpcmode", "host", "--rpchost", "127.0.0.1",
                          "--rpcport", str(port), "--usecpu"], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    end = time.monotonic() + 60
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert p.poll() is None and time.monotonic() < end, log.read_text()[-500:]
        time.sleep(0.2)
    return p


def stop_host(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    assert gone([p.pid]), "an RPC host is still running"


@pytest.fixture(scope="module")
def hosts(kcpp_script, tmp_path_factory):
    """Two RPC hosts: 'pc-a' and 'pc-b' (each shares its CPU and RAM)."""
    d = tmp_path_factory.mktemp("hosts")
    ports = [free_port(), free_port()]
    procs = []
    try:
        for p in ports:
            procs.append(start_host(kcpp_script, p, d / f"host-{p}.log"))
        yield [f"127.0.0.1:{p}" for p in ports], procs
    finally:
        for p in procs:
            stop_host(p)


@pytest.fixture
def lone_host(kcpp_script, tmp_path):
    """One RPC host of its own, for the tests that kill it."""
    port = free_port()
    p = start_host(kcpp_script, port, tmp_path / "lone.log")
    yield f"127.0.0.1:{port}", p
    stop_host(p)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_skeleton("tiny-llama-f16", tmp_path_factory.mktemp("m") / "tiny model.gguf", random_data=True)


@pytest.fixture(scope="module")
def qwen7b(tmp_path_factory):
    return write_skeleton("qwen2.5-7b-instruct-q4_k_m", tmp_path_factory.mktemp("q") / "qwen7b.gguf")


def cluster(addresses: list[str], names=("pc-a", "pc-b")) -> Rig:
    """This PC plus the nodes as Phoenix describes them (the RPC protocol's own device-memory answers)."""
    nodes = [replace(describe_node(a, timeout=10, measure=False), name=n) for a, n in zip(addresses, names)]
    return cluster_rig(this_pc(), nodes)


def per_endpoint(log: str, address: str, kind: str) -> float:
    got = logged_mib(parse_log(log), f"RPC0[{address}]", (kind,))
    return got or 0.0


# --- plan vs the engine's buffers, generation, everything stops ---

def test_two_nodes_plan_matches_the_engine_and_generates(kcpp_script, tiny, hosts, tmp_path):
    addrs, procs = hosts
    rig = cluster(addrs)
    model = read_model(tiny)
    # koboldcpp's CPU library splits by each device's free memory (it applies --tensor_split only with CUDA or
    # Vulkan): both hosts report the same, so 3 units (2 blocks + output) go 2 and 1
    plan = make_plan(model, rig, PlanSettings(context=512, batch=64, threads=1, port=free_port()))
    assert [d.name for d in plan.gpus] == [f"RPC0[{addrs[0]}] (pc-a)", f"RPC0[{addrs[1]}] (pc-b)"]
    assert [d.layers for d in plan.gpus] == [2, 1] and plan.gpus[1].has_output
    m = LaunchMachine(plan, rig, model, str(tiny), exe=str(kcpp_script), log_dir=tmp_path)
    argv = m.launch.command.argv
    assert argv[argv.index("--rpctargets") + 1] == ",".join(addrs) and "--usecpu" in argv
    with ready(m) as la:
        log = "\n".join(la.process.lines)
        for d, a in zip(plan.gpus, addrs):
            assert f"using device RPC" in log and f"({a})" in log
            assert per_endpoint(log, a, "model") == pytest.approx(d.weights_bytes / MIB, abs=0.01), a
            assert per_endpoint(log, a, "KV") == pytest.approx(d.kv_bytes / MIB, abs=0.01), a
            logged = per_endpoint(log, a, "compute")
            assert logged <= d.compute_bytes / MIB <= logged * 1.35 + 4, (a, d.compute_bytes / MIB, logged)
        # the launch's own comparison finds the RPC devices' buffers, and raises no "no GPU" warning
        comp = la.outcome.comparison
        assert all(c.actual_bytes is not None for c in comp), comp
        assert not la.outcome.warnings, la.outcome.warnings
        gen = la.backend.generate(la.host, la.port, "Hello there", 8, 512)
        assert gen.gen_tokens == 8 and gen.gen_tokens_per_s > 0
    assert all(p.poll() is None for p in procs)  # the other PCs' servers keep running for the next main PC


def test_a_7b_split_over_two_nodes_and_this_pc(kcpp_script, qwen7b, hosts):
    """A real-shape model: layers on pc-a, pc-b and this PC's CPU; weights and KV per device to the MiB."""
    addrs, _ = hosts
    rig = cluster(addrs)
    # a split given is ignored by koboldcpp's CPU library, and the plan says so and splits as it will
    plan = make_plan(read_model(qwen7b), rig, PlanSettings(context=4096, batch=512, use_mmap=True, threads=2,
                                                             port=free_port(), gpulayers=20, tensor_split=(12, 8)))
    assert any("ignores --tensor_split" in w for w in plan.warnings)
    assert [d.layers for d in plan.gpus] == [10, 10] and plan.cpu.layers == 9  # 10 blocks | 9 blocks + output
    rep, log = probe_koboldcpp(koboldcpp_command(request_for(plan, rig, qwen7b, exe=kcpp_script)).argv)
    assert "load_tensors: offloaded 20/29 layers to GPU" in log
    print("\nplan vs koboldcpp's log, MiB (pytest -s shows this table)")
    print(f"{'device':34} {'layers':>6} {'weights':>17} {'KV':>13} {'compute':>15}")
    for d, a in [*zip(plan.gpus, addrs), (plan.cpu, None)]:
        got = {k: per_endpoint(log, a, k) if a else rep.mib("cpu", k) for k in ("model", "KV", "compute")}
        print(f"{d.name:34} {d.layers:>6} {d.weights_bytes / MIB:>8.2f}/{got['model']:<8.2f} "
              f"{d.kv_bytes / MIB:>6.2f}/{got['KV']:<6.2f} {d.compute_bytes / MIB:>7.2f}/{got['compute']:<7.2f}")
    for d, a in zip(plan.gpus, addrs):
        assert per_endpoint(log, a, "model") == pytest.approx(d.weights_bytes / MIB, abs=0.01), a
        assert per_endpoint(log, a, "KV") == pytest.approx(d.kv_bytes / MIB, abs=0.01), a
    assert rep.mib("cpu", "KV") == pytest.approx(plan.cpu.kv_bytes / MIB, abs=0.01)


def test_kcpps_for_a_cluster_reads_back_through_koboldcpp(kcpp_script, tiny, hosts, tmp_path):
    addrs, _ = hosts
    rig = cluster(addrs)
    plan = make_plan(read_model(tiny), rig, PlanSettings(context=512, port=free_port()))
    write_kcpps(plan, rig, tiny, tmp_path / "c.kcpps")
    r = subprocess.run([sys.executable, str(kcpp_script), "--config", str(tmp_path / "c.kcpps"), "--exportconfig",
                        str(tmp_path / "parsed.kcpps")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-500:] + r.stderr[-500:]
    import json

    parsed = json.loads((tmp_path / "parsed.kcpps").read_text())
    assert parsed["rpcmode"] == "connect" and parsed["rpctargets"] == ",".join(addrs)
    assert parsed["tensor_split"] == [2.0, 1.0] and parsed["usecpu"] is True and parsed["gpulayers"] == 3
    assert parsed["tensor_split"] == plan.tensor_split


# --- what crosses the network per generated token (the speed model's network term) ---

class CountingRelay:
    """A loopback TCP relay in front of an RPC host that counts bytes each way and the turns (changes of
    direction: a request, then its answer). Timing on a shared machine is noise; these counts are not."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.up = self.down = self.turns = 0
        self._last = ""
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.up, self.down, self.turns

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            for a, b, way in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pipe, args=(a, b, way), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, way: str) -> None:
        while True:
            try:
                data = a.recv(1 << 16)
                if not data:
                    break
                with self._lock:
                    setattr(self, way, getattr(self, way) + len(data))
                    self.turns += self._last != way
                    self._last = way
                b.sendall(data)
            except OSError:
                break
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_one_round_trip_per_token_and_node_with_the_predicted_bytes(kcpp_script, tiny, hosts, tmp_path):
    from phoenix_gui.planner.network import RPC_REQUEST_BYTES

    addrs, _ = hosts
    relays = [CountingRelay(int(a.rpartition(":")[2])) for a in addrs]
    try:
        rig = cluster([r.address for r in relays])
        model = read_model(tiny)
        plan = make_plan(model, rig, PlanSettings(context=512, batch=64, threads=1, port=free_port()))
        assert [d.layers for d in plan.gpus] == [2, 1] and plan.gpus[1].has_output  # pc-a, then pc-b + output
        m = LaunchMachine(plan, rig, model, str(tiny), exe=str(kcpp_script), log_dir=tmp_path)
        with ready(m) as la:
            # the same prompt first: a new prompt length sends the node a whole new graph (~100 KB) once
            la.backend.generate(la.host, la.port, "Hello there", 2, 512)
            counts = []
            for n in (8, 24):  # the difference is 16 generated tokens, without the prompt's share
                before = [r.snapshot() for r in relays]
                assert la.backend.generate(la.host, la.port, "Hello there", n, 512).gen_tokens == n
                counts.append([tuple(x - y for x, y in zip(r.snapshot(), b)) for r, b in zip(relays, before)])
        per = [[(x - y) / 16 for x, y in zip(long, short)] for short, long in zip(*counts)]
        (a_up, a_down, a_turns), (b_up, b_down, b_turns) = per
        assert a_turns == 2 and b_turns == 2  # one request and one answer per token on each PC: one round trip
        assert a_down == pytest.approx(model.n_embd * 4, rel=0.1)  # pc-a hands on the activations
        assert b_down == pytest.approx(model.n_vocab * 4, rel=0.1)  # pc-b holds the output: the logits
        # up: activations, tensor headers and (with attention layers) positions and the mask (~3.4 KB measured)
        assert a_up == pytest.approx(model.n_embd * 4 + RPC_REQUEST_BYTES, rel=0.25)
        assert model.n_embd * 4 < b_up <= model.n_embd * 4 + RPC_REQUEST_BYTES  # only the output layer there
    finally:
        for r in relays:
            r.close()


# --- failures: one sentence naming the PC, nothing left running ---

def _pc(address: str, name: str = "pc-a") -> Rig:
    """A cluster whose node is described without asking it (for a node that is down or not an RPC server)."""
    from phoenix_gui.hardware.rig import GpuInfo

    dev = GpuInfo(index=0, name="CPU", uuid=f"rpc:{address}/0", pci_bus_id="", total_bytes=16 * GIB, free_bytes=15 * GIB,
                  used_bytes=GIB, compute_capability=(0, 0), architecture="cpu", bandwidth_gbs=20.0,
                  bandwidth_source="rig file", node=address)
    return cluster_rig(this_pc(), [RemoteNode(address, name, [dev])])


def test_a_node_that_is_down_is_named_before_anything_starts(kcpp_script, tiny, tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    rig = _pc(address)
    model = read_model(tiny)
    m = LaunchMachine(make_plan(model, rig, PlanSettings(context=512, port=free_port())), rig, model, str(tiny),
                      exe=str(kcpp_script), log_dir=tmp_path)
    m.start()
    assert m.state is State.FAILED and m.launch.process is None
    assert m.failure.kind == "node" and m.failure.message.startswith(f"pc-a ({address})"), m.failure.message
    assert "\n" not in m.failure.message


def test_the_engine_would_load_on_the_cpu_when_a_node_vanishes_before_load(kcpp_script, tiny, tmp_path, lone_host):
    """Past the preflight the node goes away: koboldcpp then loads its layers on the CPU without a word;
    Phoenix sees no device for it while the tensors are placed, stops the engine and names the PC."""
    address, host = lone_host
    rig = _pc(address, "pc-a")
    model = read_model(tiny)
    la = Launch(make_plan(model, rig, PlanSettings(context=512, threads=1, port=free_port())), rig, model, str(tiny),
                exe=str(kcpp_script), log_dir=tmp_path)
    assert la.preflight() is None  # the node answers now
    stop_host(host)
    la.start()
    pid = la.process.pid
    try:
        end = time.monotonic() + 120
        while la.process.poll() is None:
            assert time.monotonic() < end, "\n".join(la.process.lines)[-800:]
            time.sleep(0.1)
        la.process.wait_output()
        f = la.failed(la.process.poll(), during_load=True)
    finally:
        la.stop(5)
    assert f.kind == "node" and f.node == address and f.message.startswith(f"pc-a ({address}) did not answer"), f
    assert "Use RPC server" in "\n".join(la.process.lines)  # the engine really was asked to use it
    assert gone([pid])


def test_a_port_that_is_not_an_rpc_server(kcpp_script, tiny, tmp_path):
    """Something else listens there (an HTTP-ish server): the preflight says so; started anyway, koboldcpp
    aborts in the RPC hello, which reads as that PC's fault, not as out of memory."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    address = f"127.0.0.1:{srv.getsockname()[1]}"

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                try:
                    c.recv(64)
                    c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    try:
        rig = _pc(address, "pc-b")
        model = read_model(tiny)
        la = Launch(make_plan(model, rig, PlanSettings(context=512, threads=1, port=free_port())), rig, model,
                    str(tiny), exe=str(kcpp_script), log_dir=tmp_path)
        pre = la.preflight()
        assert pre is not None and pre.kind == "node" and pre.message.startswith(f"pc-b ({address})"), pre
        la.start()
        pid = la.process.pid
        try:
            assert la.process.proc.wait(120) != 0
            la.process.wait_output()
            f = la.failed(la.process.poll(), during_load=True)
        finally:
            la.stop(5)
        assert f.kind == "node" and not f.is_oom and f.message.startswith(f"pc-b ({address}) answered, but not as an RPC"), f
        assert gone([pid])
    finally:
        srv.close()


def test_a_node_killed_mid_run_stops_the_main_server_and_is_named(kcpp_script, tiny, tmp_path, lone_host):
    address, host = lone_host
    rig = cluster([address], names=("pc-a",))
    model = read_model(tiny)
    m = LaunchMachine(make_plan(model, rig, PlanSettings(context=512, batch=64, threads=1, port=free_port())), rig,
                      model, str(tiny), exe=str(kcpp_script), log_dir=tmp_path)
    m.start()
    pid = m.launch.process.pid
    seen: list[int] = []
    try:
        drive(m, timeout=180)
        assert m.state is State.READY, m.failure
        la = m.launch
        assert la.backend.generate(la.host, la.port, "Hi", 4, 512).gen_tokens == 4
        seen = la.process.tree_pids()
        os.killpg(host.pid, signal.SIGKILL)  # the other PC goes away
        host.wait(10)
        with pytest.raises(Exception):  # the engine aborts in the middle of this request
            la.backend.generate(la.host, la.port, "Hello again", 8, 512)
        drive(m, until=lambda m: m.state is State.FAILED, timeout=60)
    finally:
        m.stop()
    f = m.failure
    assert f.kind == "node" and f.node == address, f
    assert f.message.startswith(f"pc-a ({address}) stopped answering") and "\n" not in f.message
    assert gone([pid, *seen]), "the main server (or a helper it started) is still running"


# --- the command line ---

def test_phoenix_plan_and_bench_with_rpc_nodes(kcpp_script, tiny, hosts):
    """`--rpc` asks each real node, measures the link and plans per machine; `phoenix bench` runs the
    cluster and stops everything."""
    addrs, _ = hosts
    env = {**os.environ, "PHOENIX_CONFIG_DIR": os.environ["PHOENIX_CONFIG_DIR"]}
    plan = subprocess.run([sys.executable, "-m", "phoenix_gui.cli", "plan", str(tiny), "--rpc", ",".join(addrs),
                           "--no-bandwidth", "--ctx", "512", "--exe", str(kcpp_script)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    out = plan.stdout
    for a in addrs:
        assert f"\n{a}: link " in out and "ms round trip" in out  # a plain rpc-server: named by its address
    assert out.index(addrs[0]) < out.index(addrs[1]) < out.index("this PC:")
    assert f"--rpctargets {','.join(addrs)}" in out
    port = free_port()
    bench = subprocess.run([sys.executable, "-m", "phoenix_gui.cli", "bench", str(tiny), "--rpc", addrs[0],
                            "--no-bandwidth", "--ctx", "512", "--exe", str(kcpp_script), "--port", str(port),
                            "--prompt-tokens", "8", "--gen-tokens", "4", "--json"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert bench.returncode == 0, bench.stdout[-800:] + bench.stderr[-800:]
    import json

    r = json.loads(bench.stdout)
    assert r["gen_tokens_per_s"] > 0 and "--rpctargets" in r["argv"]
    assert [d["actual_bytes"] is not None for d in r["devices"]] == [True, True]  # the node's buffers were found
    assert socket.socket().connect_ex(("127.0.0.1", port)) != 0  # the main server is gone
