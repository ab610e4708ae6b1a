"""The RPC client's framing, version rule and bounds, against servers written here from ggml-rpc.cpp's
server loop (the real server is in test_nodes.py)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from phoenix_gui.backends import rpcwire
from phoenix_gui.backends.rpcwire import REFUSAL, RpcClient, RpcError, Version
from hostile_node import recv_exactly


class OneShotServer:
    """Accepts connections on 127.0.0.1 and hands each to `serve(conn)` in a thread; records what came in."""

    def __init__(self, serve):
        self.serve = serve
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            self.serve(self, conn)
        except OSError:
            pass

    def read(self, conn, n: int) -> bytes:
        buf = recv_exactly(conn, n)
        self.received.append(buf)
        return buf

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def server():
    made = []

    def make(serve):
        s = OneShotServer(serve)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def v4_hello(srv, conn, version=(4, 0, 1)):
    """ggml-rpc 4.x: HELLO with a 24-byte payload, answered with 4 version bytes + 24 capability bytes."""
    head = srv.read(conn, 9)
    assert head[0] == rpcwire.CMD_HELLO
    (size,) = struct.unpack("<Q", head[1:])
    if size != 24:
        conn.close()  # what a 4.x server does with an old-form HELLO
        return False
    srv.read(conn, 24)
    conn.sendall(struct.pack("<Q", 28) + bytes([*version, 0]) + bytes(24))
    return True


def test_hello_is_framed_as_ggml_rpc_frames_it(server):
    srv = server(lambda s, c: v4_hello(s, c))
    with RpcClient.open("127.0.0.1", srv.port, timeout=2) as rpc:
        assert rpc.version == Version(4, 0, 1)
    # command byte 14, payload size 24 little-endian, 24 zero capability bytes (plain TCP)
    assert srv.received[0] == bytes([14]) + (24).to_bytes(8, "little")
    assert srv.received[1] == bytes(24)


def test_a_3x_server_is_asked_again_in_the_old_form(server):
    def v3(srv, conn):  # the 3.x loop: HELLO must carry an empty payload, answered with 3 bytes
        head = srv.read(conn, 9)
        if struct.unpack("<Q", head[1:])[0] != 0:
            conn.close()
            return
        conn.sendall(struct.pack("<Q", 3) + bytes([3, 0, 0]))

    srv = server(v3)
    with RpcClient.open("127.0.0.1", srv.port, timeout=2) as rpc:
        assert rpc.version == Version(3, 0, 0)


def test_device_count_and_memory(server):
    def serve(srv, conn):
        v4_hello(srv, conn)
        assert srv.read(conn, 9) == bytes([15]) + bytes(8)
        conn.sendall(struct.pack("<QI", 4, 2))
        head = srv.read(conn, 9)
        assert head[0] == 11 and struct.unpack("<Q", head[1:])[0] == 4
        (dev,) = struct.unpack("<I", srv.read(conn, 4))
        conn.sendall(struct.pack("<QQQ", 16, 1000 + dev, 5000 + dev))

    srv = server(serve)
    with RpcClient.open("127.0.0.1", srv.port, timeout=2) as rpc:
        assert rpc.device_count() == 2
        assert rpc.device_memory(1) == (1001, 5001)


def test_a_huge_announced_reply_is_refused_without_reading_it(server):
    def serve(srv, conn):
        srv.read(conn, 33)
        conn.sendall(struct.pack("<Q", 1 << 62))  # then nothing: a reader that trusted it would wait forever

    srv = server(serve)
    t = time.monotonic()
    with pytest.raises(RpcError) as e:
        RpcClient.open("127.0.0.1", srv.port, timeout=2)
    assert e.value.kind == "not_rpc" and time.monotonic() - t < 1.0


def test_a_trickling_reply_times_out_on_the_whole_read_not_each_piece(server):
    def serve(srv, conn):
        srv.read(conn, 33)
        conn.sendall(struct.pack("<Q", 28))
        for _ in range(40):  # one byte every 0.1 s: each recv succeeds, the whole never arrives in time
            conn.sendall(b"\x04")
            time.sleep(0.1)

    srv = server(serve)
    t = time.monotonic()
    with pytest.raises(RpcError) as e:
        RpcClient.open("127.0.0.1", srv.port, timeout=1.0)
    assert e.value.kind == "silent" and time.monotonic() - t < 1.6


def test_a_garbled_device_count_is_not_believed(server):
    def serve(srv, conn):
        v4_hello(srv, conn)
        srv.read(conn, 9)
        conn.sendall(struct.pack("<QI", 4, 1_000_000))

    srv = server(serve)
    with RpcClient.open("127.0.0.1", srv.port, timeout=2) as rpc, pytest.raises(RpcError) as e:
        rpc.device_count()
    assert e.value.kind == "not_rpc"


def test_the_relay_refusal_is_told_apart(server):
    def serve(srv, conn):
        conn.sendall(REFUSAL + b" not on the allow-list\n")
        conn.shutdown(socket.SHUT_WR)
        srv.read(conn, 33)

    srv = server(serve)
    with pytest.raises(RpcError) as e:
        RpcClient.open("127.0.0.1", srv.port, timeout=2)
    assert e.value.kind == "denied"


@pytest.mark.parametrize("server_v, client_v, ok", [
    ("4.0.1", "4.0.1", True), ("4.0.0", "4.0.1", True),  # patch levels do not matter
    ("4.1.0", "4.0.1", False),  # a newer minor may use commands the client lacks
    ("4.0.0", "4.2.0", True),  # an older minor is a subset
    ("3.0.0", "4.0.1", False), ("5.0.0", "4.0.1", False),
])
def test_version_rule_is_llamacpp_negotiate_hello(server_v, client_v, ok):
    assert Version.parse(server_v).serves(Version.parse(client_v)) is ok
