"""The info endpoint of `phoenix share` (RPC port + 1): GET /info, GET /ping and POST /blob (the link test),
over HTTP/1.1 with keep-alive, bounded in every way a stranger could stretch it.

A port open to a network meets clients that connect and send nothing, or half a request, or a byte a
second, or a megabyte of headers. So: at most MAX_CONNS connections at once (MAX_PER_PEER from one
address, so one PC cannot take them all), each refused at once beyond that, never queued on a thread;
each request's line and headers must arrive within REQUEST_S and HEAD_MAX bytes; a connection lives at
most CONN_S whatever it does; a /blob body is read in pieces and dropped. Threads, time and memory are
therefore bounded by constants, not by how many clients come.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http import HTTPStatus
from typing import Callable

MAX_CONNS = 16
MAX_PER_PEER = 4
REQUEST_S = 5.0  # from a connection's start, or its last reply, to the end of the next request's headers
CONN_S = 60.0  # one connection's whole life (the link test's biggest upload takes a few seconds)
HEAD_MAX = 8 << 10
BLOB_CAP = 256 << 20  # the biggest /blob upload read (a link test, not storage)


class _Closed(Exception):
    """The client left, broke the rules, or ran out of time: the connection ends without a reply."""


class InfoServer:
    """Serves `info()` as JSON to peers for which `allowed(ip)` is true. start() binds and returns; stop()
    closes the listening socket and every connection."""

    def __init__(self, host: str, port: int, info: Callable[[], dict], allowed: Callable[[str], bool]):
        self.host, self.port, self.info, self.allowed = host, port, info, allowed
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, str] = {}  # open connection -> peer address

    def start(self) -> "InfoServer":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((self.host, self.port))
            s.listen(32)
        except OSError:
            s.close()
            raise
        self._sock = s
        threading.Thread(target=self._accept, name="share-info", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._sock.close()
            self._sock = None
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            _hang_up(c)

    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def _accept(self) -> None:
        sock = self._sock
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            ip = peer[0]
            with self._lock:
                room = len(self._conns) < MAX_CONNS and Counter(self._conns.values())[ip] < MAX_PER_PEER
                if room and self.allowed(ip):
                    self._conns[conn] = ip
                else:
                    room = False
            if not room:
                _hang_up(conn)  # no thread, no buffer: refused as it came
                continue
            threading.Thread(target=self._serve, args=(conn,), name="share-info-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        end_of_life = time.monotonic() + CONN_S
        buf = b""
        try:
            while True:
                due = min(time.monotonic() + REQUEST_S, end_of_life)
                while b"\r\n\r\n" not in buf:
                    if len(buf) > HEAD_MAX:
                        _reply(conn, {"error": "request head too large"}, 431, end_of_life, close=True)
                        return
                    buf += _recv(conn, due, 4096)
                head, _, buf = buf.partition(b"\r\n\r\n")
                if len(head) > HEAD_MAX:
                    _reply(conn, {"error": "request head too large"}, 431, end_of_life, close=True)
                    return
                buf = self._answer(conn, head.decode("latin-1"), buf, end_of_life)
                if buf is None:
                    return
        except (_Closed, OSError):
            pass
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            _hang_up(conn)

    def _answer(self, conn, head: str, rest: bytes, end: float) -> bytes | None:
        """Reply to one request; returns what was read past it, or None when the connection is to end."""
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if not sep:
                parts = []
                break
            headers[key.strip().lower()] = value.strip()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            _reply(conn, {"error": "not an HTTP/1.x request"}, 400, end, close=True)
            return None
        method, path, version = parts
        close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
        if method == "GET" and path in ("/info", "/ping"):
            _reply(conn, self.info() if path == "/info" else {}, 200, end, close)
            return None if close else rest
        length = headers.get("content-length", "")
        if method != "POST" or path != "/blob" or "transfer-encoding" in headers or not length.isdigit() \
                or int(length) > BLOB_CAP:
            _reply(conn, {"error": "GET /info, GET /ping, or POST /blob with a Content-Length up to %d" % BLOB_CAP},
                   404 if method == "GET" else 400, end, close=True)
            return None
        n = int(length)
        left = n - len(rest[:n])
        rest = rest[n:]
        while left:  # read and dropped piece by piece: memory stays one piece whatever the size
            left -= len(_recv(conn, end, min(left, 1 << 16)))
        _reply(conn, {"bytes": n}, 200, end, close)
        return None if close else rest


def _recv(conn: socket.socket, due: float, n: int) -> bytes:
    left = due - time.monotonic()
    if left <= 0:
        raise _Closed("out of time")
    conn.settimeout(left)
    try:
        got = conn.recv(n)
    except socket.timeout:
        raise _Closed("out of time") from None
    if not got:
        raise _Closed("the client left")
    return got


def _reply(conn: socket.socket, obj: dict, status: int, end: float, close: bool) -> None:
    body = json.dumps(obj).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n")
    conn.settimeout(max(end - time.monotonic(), 1e-3))  # sendall's timeout covers all of it
    conn.sendall(head.encode() + body)


def _hang_up(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
