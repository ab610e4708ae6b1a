"""Sharing safely (issue 24, items 2-4): an allow-list given empty is refused, never taken as "everyone";
the info endpoint stays bounded in threads, time and memory whatever clients do; and what the allow-list
cannot guard (the engine's own port on 127.0.0.1, open to every local account) is said.

The real koboldcpp 1.115.1 RPC host sits behind a real ShareHost; clients are real sockets, each from its
own loopback address where it plays another PC (127.0.0.1 and 127.0.0.2 are allowed, 127.0.0.3 is not)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import psutil
import pytest
from test_netlink import PHOENIX, ROOT

from phoenix_gui.backends.nodes import INFO_PORT_OFFSET
from phoenix_gui.backends.processes.ports import free_port_with
from phoenix_gui.backends.rpcwire import RpcClient
from phoenix_gui.backends.share import ShareError, ShareHost

THREADS_MAX = 30  # the endpoint's 16 connections, with room for pytest's own


@pytest.mark.parametrize("allow", ["", " ", ",", " , , ", [], "10.77.0.5,,10.77.0.6"])
def test_an_empty_allow_list_is_refused_never_open(allow):
    with pytest.raises(ShareError) as e:
        ShareHost("koboldcpp.py", host="10.77.0.2", port=50052, allow=allow)
    msg = str(e.value)
    assert "empty" in msg and "\n" not in msg and msg[0].isupper() and msg.endswith(".")


def test_an_allow_list_that_is_not_a_list_is_one_sentence():
    with pytest.raises(ShareError, match="must be addresses or networks"):
        ShareHost("koboldcpp.py", host="10.77.0.2", port=50052, allow=12345)


def test_phoenix_share_with_an_empty_allow_starts_nothing(kcpp_script):
    """`--allow "$MAIN_PC"` with the variable unset: refused before any engine starts."""
    port = free_port_with([INFO_PORT_OFFSET])
    try:
        r = subprocess.run([*PHOENIX, "share", "--port", str(port), "--allow", "", "--exe", str(kcpp_script)],
                           cwd=ROOT, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        for p in psutil.process_iter(["cmdline"]):  # the code that shared anyway: stop what it started
            if str(port) in " ".join(p.info["cmdline"] or []):
                p.kill()
        pytest.fail("phoenix share --allow '' shared instead of refusing")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("phoenix: The allow-list is empty")
    assert "starting" not in r.stderr


@pytest.mark.parametrize("typed", ["", "   ", " , "])
def test_the_share_panel_needs_an_allow_list_on_a_network_address(qtbot, wiz, typed):
    from phoenix_gui.ui.share_panel import NEEDS_ALLOW

    p = wiz.page("hardware").show_share()
    p.exe.setText("/nonexistent/koboldcpp.py")
    p.listen.addItem("192.0.2.7 — eth9 (other PCs on this network)", "192.0.2.7")  # a documentation address
    p.listen.setCurrentIndex(p.listen.count() - 1)
    p.allow.setText(typed)
    try:
        said = p.start_sharing()
        assert not p.sharing and said and p.error.text() == said  # refused before anything started
        assert said == NEEDS_ALLOW or "empty" in said
    finally:
        p.stop_sharing(wait=True)


# --- the info endpoint and the relay, around the real engine ---

@pytest.fixture(scope="module")
def share(kcpp_script):
    with ShareHost(kcpp_script, port=free_port_with([INFO_PORT_OFFSET]), cpu_only=True, allow="127.0.0.1,127.0.0.2") as host:
        yield host


def _settled_threads(limit: float = 5.0) -> int:
    end = time.monotonic() + limit
    n = threading.active_count()
    while time.monotonic() < end:
        time.sleep(0.25)
        m = threading.active_count()
        if m == n:
            break
        n = m
    return n


def _open(port: int, n: int, data: bytes, source: str) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        out.append(s)
        try:
            s.sendall(data)
        except OSError:  # turned away at once (over the cap): what the test counts, not an error
            pass
    return out


def _get(port: int, source: str, head: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\n" + head + b"Connection: close\r\n\r\n")
        reply = b""
        try:
            while chunk := s.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    return reply


def test_200_half_sent_requests_hold_bounded_threads_and_another_pc_is_still_answered(share):
    base = _settled_threads()
    slow = _open(share.info_port, 200, b"GET /info HTTP/1.1\r\nHost: x\r\n", "127.0.0.1")  # never finished
    try:
        time.sleep(1.0)
        held = threading.active_count() - base
        reply = _get(share.info_port, "127.0.0.2")  # another PC, meanwhile
    finally:
        for s in slow:
            s.close()
    assert held <= THREADS_MAX, f"{held} threads for 200 half-sent requests"
    assert reply.startswith(b"HTTP/1.1 200") and b'"phoenix-share"' in reply


def test_a_half_sent_request_is_cut_off_within_seconds(share):
    [s] = _open(share.info_port, 1, b"GET /info HTTP/1.1\r\n", "127.0.0.1")
    s.settimeout(15)
    t = time.monotonic()
    try:
        assert s.recv(100) == b""  # closed by the endpoint, nothing answered
    except socket.timeout:
        pytest.fail("a half-sent request was held for 15 s")
    finally:
        s.close()
    assert time.monotonic() - t < 8


def test_a_slow_upload_ends_with_the_connections_life(share, monkeypatch):
    from phoenix_gui.backends import infoserver

    monkeypatch.setattr(infoserver, "CONN_S", 2.0)
    [s] = _open(share.info_port, 1, b"POST /blob HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", "127.0.0.1")
    t = time.monotonic()
    try:
        while time.monotonic() - t < 10:  # a byte every 0.1 s: each read succeeds, the whole never ends
            s.sendall(b"x")
            time.sleep(0.1)
        pytest.fail("an upload of a byte every 0.1 s was read for 10 s")
    except OSError:
        pass
    finally:
        s.close()
    assert time.monotonic() - t < 5


def test_a_megabyte_of_request_headers_is_refused(share):
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 16000) for i in range(64))  # each line and count "allowed"
    reply = _get(share.info_port, "127.0.0.1", headers)
    assert not reply.startswith(b"HTTP/1.1 200")


# --- what the allow-list does not guard (item 4: said, and true) ---

def test_local_accounts_are_said_to_be_trusted_because_they_are(share):
    # true: the engine's own port on 127.0.0.1 answers a local process that never passed the relay
    with RpcClient.open("127.0.0.1", share.engine_port, timeout=5, source="127.0.0.3") as rpc:
        assert str(rpc.version) == "4.0.1"
    # and said, wherever an allow-list is used: the command line's warnings, the panel, the README
    said = ShareHost("koboldcpp.py", host="10.77.0.2", port=50052, allow="10.77.0.5").warnings()
    assert any("Other accounts on this PC are not checked" in w and "127.0.0.1" in w for w in said)
    from phoenix_gui.ui.share_panel import NO_AUTH

    assert "Other accounts on this PC are not checked" in NO_AUTH
    readme = (ROOT / "README.md").read_text()
    safely = readme[readme.index("## Sharing safely"):]
    assert "local" in safely[:3000] and "trusted" in safely[:3000]
