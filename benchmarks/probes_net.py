"""Probe surfaces for the network (see probe_kit.py):

  share  `phoenix share`'s allow-list as typed (empty, unset, garbage), and its info endpoint and relay under
         clients that hold connections open: threads, time and memory must stay bounded
  node   another PC that lies or stalls (tests/hostile_node.py: a real socket server speaking ggml-rpc and
         the info endpoint's HTTP), asked by the real `phoenix plan --rpc` as a user runs it: absurd sizes,
         free > total, 0 / 17 / 64 devices, Infinity bandwidth, control characters in names, a protocol the
         engine refuses, one PC listed twice, a GPU of this PC shared back, replies a byte at a time
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from probe_kit import Defect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
E, OK = "error", "plan"
GIB = 1 << 30
CLI_S = 18  # under the probe's own 20 s: a hang is told here, and the CLI is stopped, not left running
THREADS_MAX = 40  # the endpoint's cap (16) and the relay's (8) with room for the probe's own


# --- share ---

ALLOW = [("--allow '' on a LAN address (an unset variable)", "", E), ("--allow ' '", " ", E), ("--allow ','", ",", E),
         ("--allow ' , , '", " , , ", E), ("allow-list given as an empty list", [], E),
         ("--allow '10.0.0.1,,10.0.0.2'", "10.0.0.1,,10.0.0.2", E), ("--allow garbage", "main-pc", E),
         ("--allow 10.0.0.0/99", "10.0.0.0/99", E), ("--allow '10.0.0.1;reboot'", "10.0.0.1;reboot", E),
         ("--allow with a line break", "10.0.0.1\n10.0.0.2", E), ("--allow of 100 entries", ",".join(["10.0.0.1"] * 100), E),
         ("allow-list that is a number", 12345, E), ("--allow 192.168.1.10", "192.168.1.10", OK),
         ("--allow '192.168.1.0/24, 10.0.0.5'", "192.168.1.0/24, 10.0.0.5", OK)]
BOUNDS = [("info endpoint: 200 clients each sending half a request", OK),
          ("info endpoint: a half-sent request is cut off within seconds", OK),
          ("info endpoint: 1 MiB of request headers (64 of 16 KiB)", OK),
          ("info endpoint: /info still answers another PC during a flood", OK),
          ("relay: 200 connections from an address not on the allow-list", OK)]


def share_cases() -> list[dict]:
    out = [dict(name=n, expect=e, allow=a) for n, a, e in ALLOW]
    return out + [dict(name=n, expect=e, bound=n) for n, e in BOUNDS]


def run_share(p: dict, work: Path) -> str:
    from phoenix_gui.backends.share import ShareHost

    if "allow" in p:
        h = ShareHost("koboldcpp.py", host="10.0.0.5", port=50052, allow=p["allow"])
        return f"accepted: allow {[str(a) for a in h.allow] or 'nobody listed: every computer may connect'}"
    return _bound(p["bound"])


_endpoint: dict = {}


def _endpoint_up():
    """A share's info endpoint (open to loopback, 127.0.0.0/8: each address a PC of its own) and its
    allow-list relay (127.0.0.1 only) on 127.0.0.1, as ShareHost starts them; the engine behind is a plain
    listening socket (the bounds probed are Phoenix's, not the engine's)."""
    if _endpoint:
        return _endpoint
    from phoenix_gui.backends import share

    h = share.ShareHost("koboldcpp.py", host="127.0.0.1", port=None, allow="127.0.0.0/8")
    engine = socket.create_server(("127.0.0.1", 0))
    if hasattr(share, "_serve_info"):  # the code before the bounded endpoint: measured the same way
        info = share._serve_info(h)
    else:
        from phoenix_gui.backends.infoserver import InfoServer

        info = InfoServer(h.host, h.info_port, h.info, lambda ip: share._allowed(ip, h.allow)).start()
    relay = share._AllowRelay(h.host, h.port, engine.getsockname()[1], share.allow_list("127.0.0.1"),
                              h.refused).start()
    _endpoint.update(host=h, info=info, relay=relay, engine=engine)
    return _endpoint


def _settle(limit: float = 3.0) -> int:
    """Threads of this process once the ones ending have ended (or after `limit`)."""
    end = time.monotonic() + limit
    n = threading.active_count()
    while time.monotonic() < end:
        time.sleep(0.2)
        m = threading.active_count()
        if m == n:
            break
        n = m
    return n


def _flood(port: int, n: int, data: bytes, source: str = "127.0.0.1") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
            if data:
                s.sendall(data)
        except OSError:
            pass
        out.append(s)
    return out


def _close(socks) -> None:
    for s in socks:
        s.close()


def _get_info(port: int, source: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0)) as s:
        s.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(3)
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.") else 0


def _bound(name: str) -> str:
    ep = _endpoint_up()
    info_port, relay_port = ep["host"].info_port, ep["host"].port
    base = _settle(1.0)
    if name.startswith("info endpoint: 200"):
        grown = _threads_while(_flood(info_port, 200, b"GET /info HTTP/1.1\r\nHost: x\r\n"), base, 1.0,
                               "200 half-sent requests")
        return f"{grown} threads while 200 half-sent requests were open"
    if name.startswith("info endpoint: a half-sent"):
        [s] = _flood(info_port, 1, b"GET /info HTTP/1.1\r\n")
        s.settimeout(12)
        t = time.monotonic()
        try:
            got = s.recv(100)
        except OSError:
            got = None
        finally:
            s.close()
        took = time.monotonic() - t
        if got is None or took > 10:
            raise Defect(f"a half-sent request was still held after {took:.0f} s")
        return f"cut off after {took:.1f} s"
    if name.startswith("info endpoint: 1 MiB"):
        with socket.create_connection(("127.0.0.1", info_port), timeout=5) as s:
            head = b"GET /info HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 16000) for i in range(64)) + b"\r\n"
            try:
                s.sendall(head)
                reply = s.recv(100)
            except OSError:
                reply = b""
        if reply.startswith(b"HTTP/1.1 200") or reply.startswith(b"HTTP/1.0 200"):
            raise Defect("1 MiB of headers was read and answered")
        return f"refused: {reply[:30]!r}"
    if name.startswith("info endpoint: /info still"):
        socks = _flood(info_port, 100, b"GET /info HTTP/1.1\r\n")  # all from 127.0.0.1
        try:
            status = _get_info(info_port, "127.0.0.2")  # another PC
        except OSError:
            status = 0
        finally:
            _close(socks)
        _settle()
        if status != 200:
            raise Defect("no /info for a well-behaved client while slow ones held connections")
        return "answered"
    grown = _threads_while(_flood(relay_port, 200, b"", source="127.0.0.2"), base, 0.5,  # not on the allow-list
                           "200 refused connections")
    return f"{grown} threads while 200 strangers were turned away"


def _threads_while(socks, base: int, wait: float, what: str) -> int:
    """How many threads the share holds while these connections stay open; a Defect past THREADS_MAX."""
    try:
        time.sleep(wait)
        grown = threading.active_count() - base
    finally:
        _close(socks)
    _settle()
    if grown > THREADS_MAX:
        raise Defect(f"{grown} threads held by {what}")
    return grown


# --- node ---

def _dev(**kw) -> dict:
    d = {"name": "RTX 3060", "uuid": "GPU-11111111-2222-3333-4444-555555555555", "architecture": "Ampere",
         "compute_capability": "8.6", "bandwidth_gbs": 360.0, "bus_width_bits": 192}
    d.update(kw)
    return d


def _info(devs=None, **kw) -> dict:
    from hostile_node import share_info

    return share_info(devs if devs is not None else [_dev()], **kw)


ESC_NAME = "\x1b[2J\x1b[1;31mkitchen-pc\r\nphoenix: all good\x1b]0;owned\x07"
NODES = [
    ("a sound node (control)", [dict(info=_info())], "{0}", OK),
    ("a plain rpc-server, no info endpoint (control)", [dict()], "{0}", OK),
    ("/info sent one byte per second", [dict(info=_info(), dribble_info=1.0)], "{0}", OK),
    ("/blob reply sent one byte per second", [dict(info=_info(), dribble_blob=1.0)], "{0}", OK),
    ("RPC replies sent a byte every 0.3 s (16 devices)", [dict(devices=[(6 * GIB, 8 * GIB)] * 16, delay=0.3)], "{0}", E),
    ("2^64-1 bytes of memory", [dict(devices=[(2 ** 64 - 1, 2 ** 64 - 1)])], "{0}", E),
    ("free memory > total", [dict(devices=[(64 * GIB, 8 * GIB)])], "{0}", E),
    ("0 bytes of memory", [dict(devices=[(0, 0)])], "{0}", E),
    ("0 devices", [dict(devices=[], count=0)], "{0}", E),
    ("17 devices", [dict(devices=[(6 * GIB, 8 * GIB)] * 17)], "{0}", E),
    ("64 devices", [dict(devices=[(6 * GIB, 8 * GIB)] * 64)], "{0}", E),
    ("bandwidth Infinity", [dict(info=_info([_dev(bandwidth_gbs=float("inf"))]))], "{0}", E),
    ("bandwidth NaN", [dict(info=_info([_dev(bandwidth_gbs=float("nan"))]))], "{0}", E),
    ("bandwidth -5", [dict(info=_info([_dev(bandwidth_gbs=-5)]))], "{0}", E),
    ("bandwidth 1e300", [dict(info=_info([_dev(bandwidth_gbs=1e300)]))], "{0}", E),
    ("bandwidth as text", [dict(info=_info([_dev(bandwidth_gbs="fast")]))], "{0}", E),
    ("bus width 2^70", [dict(info=_info([_dev(bus_width_bits=2 ** 70)]))], "{0}", E),
    ("escape sequences and line breaks in the PC's name", [dict(info=_info(name=ESC_NAME))], "{0}", OK),
    ("escape sequences in a device name", [dict(info=_info([_dev(name="\x1b[31mRTX\x1b[0m 3060\n\rok")]))], "{0}", OK),
    ("bidirectional override in the engine", [dict(info=_info(engine="koboldcpp \u202e1.511.1\u202c\x07"))], "{0}", OK),
    ("a 100,000-deep /info", [dict(info_raw="[" * 100_000 + "]" * 100_000)], "{0}", OK),
    ("RPC protocol 255.255.255", [dict(version=(255, 255, 255))], "{0}", E),
    ("RPC protocol 4.9.0 (newer minor)", [dict(version=(4, 9, 0))], "{0}", E),
    ("RPC protocol 3.0.0 (older, old hello)", [dict(version=(3, 0, 0), old_form=True)], "{0}", E),
    ("one PC as 127.0.0.1 and as localhost", [dict(info=_info())], "{0},{0l}", E),
    ("two nodes reporting the same GPU", [dict(info=_info()), dict(info=_info())], "{0},{1}", E),
    ("a node sharing this PC's own GPU (its UUID)", [dict(info="local-uuid")], "{0}", E),
    ("17 devices with this PC's 3", [dict(devices=[(6 * GIB, 8 * GIB)] * 14)], "{0}", E),
]


def node_cases() -> list[dict]:
    return [dict(name=n, expect=e, nodes=nodes, targets=t) for n, nodes, t, e in NODES]


def _engine(work: Path) -> Path:
    """koboldcpp.py in a source tree: the real built one when there is one, else the file the engine's RPC
    protocol is read from (ggml/include/ggml-rpc.h, 4.0.1 as in koboldcpp 1.115.1) beside a koboldcpp.py."""
    try:
        import kcpp_build

        tree = kcpp_build.built_tree()
    except Exception:  # noqa: BLE001 - no build: the header alone
        tree = None
    if tree:
        return tree / "koboldcpp.py"
    tree = work / "kcpp-src"
    header = tree / "ggml" / "include" / "ggml-rpc.h"
    header.parent.mkdir(parents=True, exist_ok=True)
    header.write_text("#define RPC_PROTO_MAJOR_VERSION    4\n#define RPC_PROTO_MINOR_VERSION    0\n"
                      "#define RPC_PROTO_PATCH_VERSION    1\n")
    (tree / "koboldcpp.py").write_text("")
    return tree / "koboldcpp.py"


def run_node(p: dict, work: Path) -> str:
    from hostile_node import HostileNode

    from phoenix_gui.hardware import demo_rig_path, load_rig
    from phoenix_gui.validate import InputError

    local_uuid = load_rig(demo_rig_path()).gpus[0].uuid
    nodes = []
    try:
        for kw in p["nodes"]:
            kw = dict(kw)
            if kw.get("info") == "local-uuid":
                kw["info"] = _info([_dev(uuid=local_uuid)])
            nodes.append(HostileNode(**kw))
        targets = p["targets"].format(*[n.address for n in nodes], **{"0l": f"localhost:{nodes[0].port}"})
        argv = [sys.executable, "-m", "phoenix_gui", "plan", "--demo", "--rpc", targets, "--exe", str(_engine(work))]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        t = time.monotonic()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_S, cwd=ROOT, env=env,
                               errors="surrogateescape")
        except subprocess.TimeoutExpired:
            raise Defect(f"`phoenix plan --rpc` was still asking after {CLI_S} s (stopped)") from None
    finally:
        for n in nodes:
            n.close()
    raw = [c for c in r.stdout + r.stderr if not (c.isprintable() or c == "\n")]
    if raw:
        raise Defect(f"raw control characters from the network reached the terminal: {''.join(raw)[:20]!r}")
    err = r.stderr.strip().splitlines()
    if r.returncode in (1, 2) and err and err[-1].startswith("phoenix: ") and "unexpected error" not in err[-1]:
        raise InputError(err[-1].removeprefix("phoenix: "))
    if r.returncode not in (0, 3):
        raise RuntimeError(f"exit {r.returncode}: {(r.stderr or r.stdout)[-300:]}")
    if "nan" in r.stdout.lower().split() or "Infinity" in r.stdout:
        raise Defect("the plan shows nan or Infinity")
    line = next((ln for ln in r.stdout.splitlines() if "tokens/s" in ln), r.stdout.strip()[:80])
    return f"planned in {time.monotonic() - t:.1f} s: {line.strip()[:100]}"


SURFACES = {"share": (share_cases, run_share), "node": (node_cases, run_node)}
