"""A network lab for the cluster tests: network namespaces linked by veth pairs (as root), an optional
`tbf` rate limit, and a userspace TCP relay that delays each direction (this kernel has no netem).

Only loopback and addresses inside namespaces this lab creates are ever used. Every namespace gets a
unique name and is deleted on exit, also when a test fails (and at interpreter exit as a last resort);
deleting a namespace deletes the veth ends inside it.
"""

from __future__ import annotations

import atexit
import heapq
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
    for a fixed delay per direction: `up_s` on the way to the target, `down_s` on the way back. Data is
    pipelined (a reader stamps each chunk, a writer releases it when due), so the delay does not cap the
    throughput."""

    def __init__(self, target: tuple[str, int], up_s: float = 0.0, down_s: float = 0.0,
                 listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.target, self.up_s, self.down_s = target, up_s, down_s
        self._srv = socket.create_server(listen)
        self.address = self._srv.getsockname()[:2]
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "DelayRelay":
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        return self.address[1]

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name="delay-relay")
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [client, upstream]
            self._pipe(client, upstream, self.up_s)
            self._pipe(upstream, client, self.down_s)

    def _pipe(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        queue: list = []  # (due, seq, data); data b"" marks the end
        cond = threading.Condition()
        seq = itertools.count()

        def read():
            while True:
                try:
                    data = src.recv(1 << 16)
                except OSError:
                    data = b""
                with cond:
                    heapq.heappush(queue, (time.monotonic() + delay, next(seq), data))
                    cond.notify()
                if not data:
                    return

        def write():
            while True:
                with cond:
                    while not queue:
                        cond.wait()
                    due, _, data = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        cond.wait(wait)
                        continue
                    heapq.heappop(queue)
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        self._spawn(read)
        self._spawn(write)

    def close(self) -> None:
        self._stop.set()
        for s in [self._srv, *self._socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


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
