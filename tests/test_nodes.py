"""describe_node and check_version against the real koboldcpp 1.115.1 RPC host on 127.0.0.1, servers that
speak another protocol version, and ports that are closed, silent, busy, dying or something else."""

from __future__ import annotations

import http.server
import sys
import struct
import threading
import time
from pathlib import Path

import psutil
import pytest
from test_rpcwire import OneShotServer

from phoenix_gui.backends import nodes, protocols
from phoenix_gui.backends.nodes import ASSUMED_MBS, NodeError, describe_node
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.protocols import check_version, engine_protocol
from phoenix_gui.backends.rpcwire import RpcClient, RpcError, Version
from phoenix_gui.backends.share import ShareHost

MIB = 1 << 20


def engines_on(port: int) -> list:
    """koboldcpp processes serving RPC on this port (none may be left after a test)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "--rpcport" in cmd and cmd[cmd.index("--rpcport") + 1:][:1] == [str(port)]:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def plain_host(kcpp_script):
    """The real engine in RPC host mode with no Phoenix info endpoint beside it (a bare koboldcpp)."""
    host = ShareHost(kcpp_script, port=None, info=False, cpu_only=True).start()
    yield host
    host.stop()
    assert not engines_on(host.port)


def test_describes_the_real_rpc_host(plain_host):
    node = describe_node(plain_host.address, timeout=5)
    assert node.protocol == "4.0.1" and node.address == node.name == plain_host.address
    [dev] = node.devices
    logged = plain_host.engine_devices[0]  # "CPU: ... (N MiB, M MiB free)" printed by the host itself
    assert dev.total_bytes // MIB == logged["total_bytes"] // MIB
    assert dev.node == plain_host.address and dev.name == f"RPC0[{plain_host.address}]"
    # without the info endpoint: the RTT is measured over RPC, the throughput is assumed and says so
    assert 0 < node.link.rtt_ms < 50 and node.link.throughput_mbs == ASSUMED_MBS and not node.link.measured


def test_same_engine_same_protocol(plain_host, kcpp_script):
    node = describe_node(plain_host.address, measure=False)
    assert node.link is None
    assert engine_protocol(kcpp_script) == Version(4, 0, 1)
    assert check_version(node, kcpp_script) is None


def test_a_koboldcpp_without_its_source_is_asked_in_host_mode(kcpp_script):
    assert protocols._asked_version(Path(kcpp_script)) == Version(4, 0, 1)


def _fake_node(version: tuple[int, int, int], old_form: bool):
    """An RPC server of another version, answering as ggml-rpc's serve loop does: HELLO in its own form,
    then DEVICE_COUNT (1) and GET_DEVICE_MEMORY (8 GiB total, 6 GiB free) until the client leaves."""

    def serve(srv, conn):
        head = srv.read(conn, 9)
        size = struct.unpack("<Q", head[1:])[0]
        if old_form:
            if size != 0:
                conn.close()
                return
            conn.sendall(struct.pack("<Q", 3) + bytes(version))
        else:
            if size != 24:
                conn.close()
                return
            srv.read(conn, 24)
            conn.sendall(struct.pack("<Q", 28) + bytes([*version, 0]) + bytes(24))
        while True:
            cmd = srv.read(conn, 9)
            n = struct.unpack("<Q", cmd[1:])[0]
            if n:
                srv.read(conn, n)
            if cmd[0] == 15:
                conn.sendall(struct.pack("<QI", 4, 1))
            else:
                conn.sendall(struct.pack("<QQQ", 16, 6 << 30, 8 << 30))

    return OneShotServer(serve)


@pytest.mark.parametrize("version, old_form, word", [((3, 0, 0), True, "older"), ((5, 0, 0), False, "newer"),
                                                     ((4, 1, 0), False, "newer")])
def test_version_mismatch_is_found_before_loading(kcpp_script, version, old_form, word):
    fake = _fake_node(version, old_form)
    try:
        address = f"127.0.0.1:{fake.port}"
        node = describe_node(address, timeout=3)
        assert node.protocol == "%d.%d.%d" % version and node.devices[0].total_bytes == 8 << 30
        with pytest.raises(NodeError) as e:
            check_version(node, kcpp_script)
        msg = str(e.value)
        assert address in msg and node.protocol in msg and "4.0.1" in msg and word in msg
        assert "same koboldcpp or llama.cpp version" in msg and "\n" not in msg
    finally:
        fake.close()


def test_closed_port_is_one_sentence():
    port = free_port()
    t = time.monotonic()
    with pytest.raises(NodeError, match=f"The PC at 127.0.0.1:{port} is up but nothing listens on that port"):
        describe_node(f"127.0.0.1:{port}")
    assert time.monotonic() - t < 1


def test_a_server_that_speaks_first_is_not_an_rpc_server():
    srv = OneShotServer(lambda s, c: (c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"), time.sleep(5)))
    try:
        with pytest.raises(NodeError, match="is not a llama.cpp RPC server .*check the port"):
            describe_node(f"127.0.0.1:{srv.port}", timeout=2)
    finally:
        srv.close()


def test_an_http_server_waits_for_a_line_and_is_told_as_not_answering():
    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{srv.server_address[1]}"
        t = time.monotonic()
        with pytest.raises(NodeError, match="did not answer the RPC hello .* or this port is not an RPC server"):
            describe_node(address, timeout=2)
        assert time.monotonic() - t < 2.5
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_silent_port_times_out_in_bounded_time():
    srv = OneShotServer(lambda s, c: time.sleep(30))  # accepts, reads nothing, says nothing
    try:
        t = time.monotonic()
        with pytest.raises(NodeError, match="did not answer the RPC hello"):
            describe_node(f"127.0.0.1:{srv.port}", timeout=1.0)
        assert time.monotonic() - t < 1.8
    finally:
        srv.close()


def test_a_node_busy_with_another_main_pc_says_so(plain_host):
    # llama.cpp's RPC server serves one client at a time: while an engine is connected, others wait
    with RpcClient.open("127.0.0.1", plain_host.port, timeout=5):
        with pytest.raises(NodeError, match="busy with another main PC"):
            describe_node(plain_host.address, timeout=1.0)
    assert describe_node(plain_host.address, measure=False).protocol == "4.0.1"  # free again


def test_a_node_dying_mid_exchange(kcpp_script):
    host = ShareHost(kcpp_script, port=None, info=False, cpu_only=True).start()
    try:
        rpc = RpcClient.open("127.0.0.1", host.port, timeout=3)
        for p in host._proc.tree_pids():  # the PC crashes: the engine dies without a word
            psutil.Process(p).kill()
        with pytest.raises(RpcError) as e:
            rpc.device_count()
        rpc.close()
        assert e.value.kind == "closed"
        assert nodes._sentence(host.address, e.value) == (
            f"The PC at {host.address} closed the connection in the middle of the RPC exchange: its server "
            "stopped or crashed.")
        with pytest.raises(NodeError, match="nothing listens"):
            describe_node(host.address, timeout=2)
    finally:
        host.stop()
    assert not engines_on(host.port)


@pytest.mark.parametrize("bad", ["", "host", "1.2.3.4:0", "1.2.3.4:99999", "[::1]:50052", "a b:1", "ho\nst:1",
                                 "1.2.3.4:５", "1.2.3.999:50052", None])
def test_bad_addresses_are_one_sentence(bad):
    with pytest.raises(NodeError) as e:
        describe_node(bad)
    msg = str(e.value)
    assert msg.endswith(".") and "\n" not in msg and "Traceback" not in msg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from phoenix_gui.model.skeleton import write_skeleton

    return write_skeleton("tiny-llama-f16", tmp_path_factory.mktemp("m") / "tiny.gguf", random_data=True)


@pytest.mark.parametrize("version", [(5, 0, 0), (4, 1, 0)])
def test_check_version_agrees_with_the_real_engine(kcpp_script, tiny, version):
    """The real koboldcpp main refuses these nodes as check_version does; worse, it then loads the model
    without them ("Failed to connect" and the layers go elsewhere), so the check must come before."""
    from phoenix_gui.backends.processes.process import ServerProcess

    fake = _fake_node(version, old_form=False)
    target = f"127.0.0.1:{fake.port}"
    with pytest.raises(NodeError):
        check_version(describe_node(target, measure=False), kcpp_script)
    argv = [sys.executable, str(kcpp_script), "--skiplauncher", "--model", str(tiny), "--rpcmode", "connect",
            "--rpctargets", target, "--gpulayers", "99", "--contextsize", "512", "--threads", "1",
            "--host", "127.0.0.1", "--port", str(free_port()), "--singleinstance"]
    engine = ServerProcess(argv).start()
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and engine.poll() is None:
            if any(line.startswith("Failed to connect to") for line in engine.lines):
                break
            time.sleep(0.2)
        lines = list(engine.lines)
    finally:
        engine.stop(timeout=5)
        fake.close()
    assert "RPC server version mismatch: %d.%d.%d" % version in lines
    assert f"Failed to connect to {target}" in lines
