"""A node that lies or stalls, for what a real engine cannot be made to do: absurd RPC replies, a wrong
protocol version, an info endpoint that answers a byte at a time or with Infinity in its JSON.

It is a real server on 127.0.0.1 speaking the real wire formats: ggml-rpc as backends/rpcwire.py's
docstring describes it (HELLO in the 4.x form, or the 3.x form; DEVICE_COUNT; GET_DEVICE_MEMORY) on port
P, and `phoenix share`'s HTTP info endpoint (/info, /blob) on P + 1. Each connection is served on its
own thread; close() ends them all.
"""

from __future__ import annotations

import json
import socket
import struct
import threading

CMD_GET_DEVICE_MEMORY, CMD_HELLO, CMD_DEVICE_COUNT = 11, 14, 15
GIB = 1 << 30


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    """n bytes from conn, however the peer splits them; OSError when it closes first."""
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf


def port_pair() -> tuple[socket.socket, socket.socket]:
    """Two listening sockets on adjacent loopback ports P and P + 1."""
    for _ in range(200):
        a = socket.create_server(("127.0.0.1", 0))
        p = a.getsockname()[1]
        try:
            b = socket.create_server(("127.0.0.1", p + 1))
            return a, b
        except OSError:
            a.close()
    raise RuntimeError("no free pair of adjacent ports")


class HostileNode:
    """version: what HELLO says (old_form: the 3.x exchange); devices: [(free, total)] (count: the count
    said, default len(devices)); delay: seconds before each byte of each RPC reply after the hello; info: a dict served as
    /info (or raw text: `info_raw`), None for no endpoint; dribble_info / dribble_blob: seconds per byte
    of those replies."""

    def __init__(self, version=(4, 0, 1), devices=((6 * GIB, 8 * GIB),), count=None, old_form=False,
                 delay=0.0, info=None, info_raw=None, dribble_info=0.0, dribble_blob=0.0):
        self.version, self.devices, self.old_form, self.delay = version, list(devices), old_form, delay
        self.count = len(self.devices) if count is None else count
        self.info_raw = info_raw if info_raw is not None else (None if info is None else json.dumps(info))
        self.dribble_info, self.dribble_blob = dribble_info, dribble_blob
        self._rpc, self._http = port_pair()
        self.port = self._rpc.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._closed = threading.Event()
        for sock, serve in ((self._rpc, self._serve_rpc), (self._http, self._serve_http)):
            threading.Thread(target=self._accept, args=(sock, serve), daemon=True).start()

    def __enter__(self) -> "HostileNode":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        for s in [self._rpc, self._http, *self._conns]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, sock, serve) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._one, args=(serve, conn), daemon=True).start()

    def _one(self, serve, conn) -> None:
        try:
            serve(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _send(self, conn, data: bytes, per_byte: float) -> None:
        if not per_byte:
            conn.sendall(data)
            return
        for i in range(len(data)):
            if self._closed.wait(per_byte):
                return
            conn.sendall(data[i:i + 1])

    # --- ggml-rpc ---
    def _serve_rpc(self, conn) -> None:
        head = recv_exactly(conn, 9)
        size = struct.unpack("<Q", head[1:])[0]
        if head[0] != CMD_HELLO or size != (0 if self.old_form else 24):
            return  # what a server of that form does with the other form: hang up
        recv_exactly(conn, size)
        reply = bytes(self.version) if self.old_form else bytes([*self.version, 0]) + bytes(24)
        conn.sendall(struct.pack("<Q", len(reply)) + reply)
        while True:
            cmd = recv_exactly(conn, 9)
            n = struct.unpack("<Q", cmd[1:])[0]
            payload = recv_exactly(conn, n) if n else b""
            if cmd[0] == CMD_DEVICE_COUNT:
                self._send(conn, struct.pack("<QI", 4, self.count), self.delay)
            elif cmd[0] == CMD_GET_DEVICE_MEMORY:
                (i,) = struct.unpack("<I", payload)
                free, total = self.devices[i % len(self.devices)] if self.devices else (0, 0)
                self._send(conn, struct.pack("<QQQ", 16, free, total), self.delay)
            else:
                return

    # --- the info endpoint ---
    def _serve_http(self, conn) -> None:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            line = head.split(b"\r\n")[0].decode()
            length = 0
            for h in head.split(b"\r\n")[1:]:
                k, _, val = h.decode().partition(":")
                if k.strip().lower() == "content-length":
                    length = int(val)
            left = length - len(buf[:length])
            buf = buf[length:]
            while left:  # a /blob body: counted and dropped
                chunk = conn.recv(min(left, 1 << 16))
                if not chunk:
                    return
                left -= len(chunk)
            if line.startswith("GET /info") and self.info_raw is not None:
                body, per_byte = self.info_raw.encode("utf-8", "surrogatepass"), self.dribble_info
            elif line.startswith("POST /blob") and self.info_raw is not None:
                body, per_byte = json.dumps({"bytes": length}).encode(), self.dribble_blob
            else:
                body, per_byte = b"{}", 0.0
            status = "200 OK" if self.info_raw is not None else "404 Not Found"
            self._send(conn, f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                             f"\r\n\r\n".encode() + body, per_byte)


def share_info(devices: list[dict], name: str = "hostile-pc", engine: str = "koboldcpp 1.115.1",
               protocol: str = "4.0.1") -> dict:
    """An /info body in `phoenix share`'s form."""
    return {"service": "phoenix-share", "name": name, "engine": engine, "protocol": protocol, "devices": devices}
