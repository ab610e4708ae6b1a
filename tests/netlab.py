"""A network lab for the cluster tests: network namespaces linked by veth pairs (as root), an optional
`tbf` rate limit, and a userspace TCP relay that delays each direction (this kernel has no netem).

Only loopback and addresses inside namespaces this lab creates are ever used. Every namespace gets a
unique name and is deleted on exit, also when a test fails (and at interpreter exit as a last resort);
deleting a namespace deletes the veth ends inside it.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

_counter = itertools.count()
_alive: set[str] = set()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can): tried for real, not guessed."""
    if not shutil.which("ip") or not shutil.which("tc"):
        return "the ip and tc tools (iproute2) are missing"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"phxprobe{os.getpid()}"
    r = _ip("netns", "add", name, check=False)
    if r.returncode:
        return f"ip netns add failed: {r.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


def require() -> None:
    """Skip where namespaces cannot exist (a developer's non-root shell); in CI, which runs as root, fail
    loudly instead: a silent skip there would hide a broken network test."""
    why = unavailable()
    if why:
        if _in_ci():
            pytest.fail(f"The network-namespace tests cannot run in CI: {why}.", pytrace=False)
        pytest.skip(why)


class NetLab:
    """with NetLab() as lab: a, b = lab.namespace(), lab.namespace(); lab.link(a, "10.77.0.1/24", b, ...)"""

    def __init__(self):
        self.namespaces: list[str] = []

    def __enter__(self) -> "NetLab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def namespace(self) -> str:
        name = f"phx{os.getpid()}n{next(_counter)}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _alive.add(name)
        self.exec(name, ["ip", "link", "set", "lo", "up"])
        return name

    def link(self, ns_a: str, addr_a: str, ns_b: str, addr_b: str, rate_mbit: float | None = None,
             extra_a: tuple[str, ...] = ()) -> tuple[str, str]:
        """A veth pair between two namespaces, addresses in CIDR form; rate_mbit limits a -> b with tbf
        (on a's end: a qdisc shapes what leaves). extra_a: more addresses on a's end. Returns the two
        interface names."""
        i = next(_counter)
        va, vb = f"phxv{os.getpid() % 10000}a{i}", f"phxv{os.getpid() % 10000}b{i}"
        _ip("link", "add", va, "netns", ns_a, "type", "veth", "peer", "name", vb, "netns", ns_b)
        for ns, dev, addrs in ((ns_a, va, (addr_a, *extra_a)), (ns_b, vb, (addr_b,))):
            for a in addrs:
                self.exec(ns, ["ip", "addr", "add", a, "dev", dev])
            self.exec(ns, ["ip", "link", "set", dev, "up"])
        if rate_mbit:
            # burst: enough for the rate at a 250 Hz timer; latency bounds the queue (a full queue drops)
            burst = max(int(rate_mbit * 1e6 / 8 / 250), 16 << 10)
            self.exec(ns_a, ["tc", "qdisc", "add", "dev", va, "root", "tbf", "rate", f"{rate_mbit}mbit",
                             "burst", str(burst), "latency", "200ms"])
        return va, vb

    def exec(self, ns: str, argv: list[str], timeout: float = 60.0) -> str:
        r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"in {ns}: {' '.join(argv)}: {(r.stderr or r.stdout).strip()[-800:]}")
        return r.stdout

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        """A long-running process inside a namespace (`ip netns exec` execs it: the pid is the program's)."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)

    def close(self) -> None:
        for name in reversed(self.namespaces):
            _delete(name)
        self.namespaces.clear()


def _delete(name: str) -> None:
    for _ in range(20):  # a namespace still in use by an exiting process can refuse for a moment
        if _ip("netns", "del", name, check=False).returncode == 0 or name not in namespaces():
            break
        time.sleep(0.1)
    _alive.discard(name)


def namespaces() -> list[str]:
    r = _ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


@atexit.register
def _leftovers() -> None:
    for name in list(_alive):
        _delete(name)


class DelayRelay:
    """A TCP relay on 127.0.0.1 (or any address of the namespace it runs in) to target, holding each byte
    for a fixed delay per direction: `up_s` on the way to the target, `down_s` on the way back. One asyncio
    loop in one thread: each chunk is written by a timer at arrival + delay (timers with equal delays keep
    their order), so data is pipelined and the delay does not cap the throughput; and no thread has to win
    the GIL back on time, which kept threaded versions tens of ms late on a busy machine."""

    def __init__(self, target: tuple[str, int], up_s: float = 0.0, down_s: float = 0.0,
                 listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.target, self.up_s, self.down_s = target, up_s, down_s
        self._sock = socket.create_server(listen)
        self.address = self._sock.getsockname()[:2]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="delay-relay")
        self._server = None
        self._transports: list = []

    def __enter__(self) -> "DelayRelay":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self.address[1]

    async def _serve(self):
        return await self._loop.create_server(lambda: _Leg(self, self.up_s, self._connect), sock=self._sock)

    def _connect(self, client: "_Leg") -> None:
        async def go():
            try:
                _, upstream = await self._loop.create_connection(lambda: _Leg(self, self.down_s, None, client),
                                                                 *self.target)
            except OSError:
                client.transport.close()
                return
            client.attach(upstream)

        self._loop.create_task(go())

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        def stop():
            if self._server:
                self._server.close()
            for t in self._transports:
                t.abort()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)
        self._loop.close()


class _Leg(asyncio.Protocol):
    """One side of a relayed connection: what arrives here is written to the other side `delay` later."""

    def __init__(self, relay: DelayRelay, delay: float, on_connect=None, peer: "_Leg | None" = None):
        self.relay, self.delay, self.on_connect, self.peer = relay, delay, on_connect, peer
        self.transport = None
        self.early: list[bytes | None] = []  # data from the client before the target connection exists

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.relay._transports.append(transport)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.peer is None:
            self.on_connect(self)

    def attach(self, peer: "_Leg") -> None:
        self.peer = peer
        peer.peer = self
        for item in self.early:
            self._forward(item)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self.early.append(data)
        else:
            self._forward(data)

    def eof_received(self):
        if self.peer is None:
            self.early.append(None)
        else:
            self._forward(None)
        return True  # keep the other direction open until it ends too

    def _forward(self, data: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        out = self.peer.transport
        if data is None:
            loop.call_later(self.delay, lambda: out.can_write_eof() and not out.is_closing() and out.write_eof())
        else:
            loop.call_later(self.delay, lambda: out.is_closing() or out.write(data))

    def connection_lost(self, exc) -> None:
        if self.peer and self.peer.transport:
            asyncio.get_running_loop().call_later(self.delay, self.peer.transport.close)


def main(argv: list[str]) -> None:
    """python tests/netlab.py UP_MS DOWN_MS LISTEN_PORT:TARGET_HOST:TARGET_PORT ...: delay relays on 127.0.0.1
    of the namespace this runs in (ip netns exec NS ...), until killed; prints "ready" once listening."""
    up, down = float(argv[0]) / 1000, float(argv[1]) / 1000
    relays = []
    for spec in argv[2:]:
        lport, thost, tport = spec.split(":")
        relays.append(DelayRelay((thost, int(tport)), up, down, listen=("127.0.0.1", int(lport))).__enter__())
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
