"""A minimal client of llama.cpp's RPC protocol (ggml-rpc), as koboldcpp 1.115.1 and llama.cpp's rpc-server
speak it: enough to ask a node its protocol version, its device count and each device's memory, before
anything is loaded.

The wire format, from ggml/src/ggml-rpc/ggml-rpc.cpp (protocol 4.0.1):
  request   command (1 byte) | payload size (uint64 little-endian) | payload
  reply     payload size (uint64 little-endian) | payload
  HELLO (14) must come first. Since 4.0 its payload is 24 bytes of transport capabilities (zeros: plain TCP)
  and the reply is major, minor, patch, padding (1 byte each) + 24 bytes of capabilities. Before 4.0 the
  payload was empty and the reply 3 bytes; a 4.x server closes the connection on an empty HELLO, a 3.x one
  on a 24-byte HELLO. So a closed connection after one form is answered by trying the other.
  DEVICE_COUNT (15): empty payload, reply uint32.  GET_DEVICE_MEMORY (11): uint32 device, reply 2 x uint64
  (free, total).
A client and a server agree when the majors are equal and the server's minor is not newer than the
client's (the rule of the engine's own negotiate_hello).

Every read is bounded (the reply size must be the one the command defines) and timed, so a port that
is something else, or nothing, gives an RpcError, never a hang or an unbounded buffer. A client opened with
a deadline holds the whole exchange to it (connect, every send and every read), so a node that answers a
byte at a time cannot stretch it: a timeout per read would let it. The server serves one client at a time:
a node busy with an engine accepts the connection but answers only when that engine disconnects, which
shows here as a timeout.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15
CAPS_SIZE = 24
MAX_DEVICES = 64  # more than any PC has; a bigger count is a garbled reply
# What a `phoenix share` relay writes to a peer that is not on its allow-list before closing: 8 bytes where a
# reply size would be, so Phoenix can say "not allowed" instead of "not an RPC server".
REFUSAL = b"PHOENIX!"


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, text: str) -> "Version":
        parts = [int(p) for p in text.strip().split(".")]
        return cls(*(parts + [0, 0])[:3])

    def serves(self, client: "Version") -> bool:
        """True when a server speaking this version accepts `client` (llama.cpp's negotiate_hello)."""
        return self.major == client.major and self.minor <= client.minor


SPOKEN = Version(4, 0, 1)  # what this client writes; HELLO is read in both the 4.x and the older form


class RpcError(OSError):
    """Why talking to a node failed. kind: refused, unreachable, timeout (no connection), silent (connected,
    no reply to the hello), slow (it answered the hello, then not the rest within the deadline), closed,
    not_rpc, denied."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def connect(host: str, port: int, timeout: float, source: str | None = None) -> socket.socket:
    if timeout <= 0:
        raise RpcError("timeout", "no time was left to connect")
    try:
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
    except ConnectionRefusedError:
        raise RpcError("refused", "nothing listens on that port (connection refused)") from None
    except socket.timeout:
        raise RpcError("timeout", f"no answer to the connection within {timeout:g} s") from None
    except socket.gaierror:
        raise RpcError("unreachable", "the name does not resolve to an address") from None
    except OSError as e:
        raise RpcError("unreachable", f"it cannot be reached ({e.strerror or e})") from None
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class RpcClient:
    """One connection to an RPC server. Use as a context manager; close() soon: the server serves no one
    else while this connection is open."""

    def __init__(self, sock: socket.socket, timeout: float, deadline: float | None = None):
        self.sock = sock
        self.timeout = timeout
        self.deadline = deadline  # time.monotonic() by which every exchange on it must be over; None: none
        self.version: Version | None = None

    @classmethod
    def open(cls, host: str, port: int, timeout: float = 5.0, source: str | None = None,
             deadline: float | None = None) -> "RpcClient":
        """Connect and say HELLO; .version is the server's. An older-form server is reconnected once.
        With a deadline (time.monotonic()), the whole exchange, reconnection included, ends by then."""

        def left() -> float:
            return timeout if deadline is None else min(timeout, deadline - time.monotonic())

        client = cls(connect(host, port, left(), source), timeout, deadline)
        try:
            client.version = client._hello(CAPS_SIZE)
            return client
        except RpcError as e:
            client.close()
            if e.kind != "closed":
                raise
        old = cls(connect(host, port, left(), source), timeout, deadline)
        try:
            old.version = old._hello(0)
        except RpcError as e:
            old.close()
            if e.kind == "closed":
                raise RpcError("not_rpc", "it closed the connection on the RPC hello in both forms") from None
            raise
        return old

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # --- commands ---
    def _hello(self, caps: int) -> Version:
        reply = self._call(CMD_HELLO, bytes(caps), 4 + CAPS_SIZE if caps else 3)
        return Version(reply[0], reply[1], reply[2])

    def device_count(self) -> int:
        (n,) = struct.unpack("<I", self._call(CMD_DEVICE_COUNT, b"", 4))
        if n > MAX_DEVICES:
            raise RpcError("not_rpc", f"it reported {n} devices")
        return n

    def device_memory(self, device: int) -> tuple[int, int]:
        """(free, total) bytes of one device, as the node's engine sees them."""
        free, total = struct.unpack("<QQ", self._call(CMD_GET_DEVICE_MEMORY, struct.pack("<I", device), 16))
        return free, total

    def round_trip_s(self) -> float:
        """One small request and its reply (DEVICE_COUNT), in seconds: the link's latency as the engine
        sees it, through whatever relays lie between."""
        t = time.perf_counter()
        self.device_count()
        return time.perf_counter() - t

    # --- framing ---
    def _call(self, cmd: int, payload: bytes, reply_size: int) -> bytes:
        end = self._end()
        try:
            self.sock.settimeout(max(end - time.monotonic(), 1e-3))  # sendall's timeout covers all of it
            self.sock.sendall(bytes([cmd]) + struct.pack("<Q", len(payload)) + payload)
        except socket.timeout:
            raise self._late() from None
        except OSError:
            raise RpcError("closed", "it closed the connection") from None
        head = self._read(8, end)
        if head == REFUSAL:
            raise RpcError("denied", "its allow-list does not include this PC's address")
        (size,) = struct.unpack("<Q", head)
        if size != reply_size:
            raise RpcError("not_rpc", f"its reply is not an RPC reply ({size} bytes announced, "
                                      f"{reply_size} expected)")
        return self._read(reply_size, end)

    def _end(self) -> float:
        """When the call starting now must be over: its timeout, or the client's deadline if sooner."""
        end = time.monotonic() + self.timeout
        return end if self.deadline is None else min(end, self.deadline)

    def _late(self) -> RpcError:
        if self.version is None:
            return RpcError("silent", f"no RPC reply within {self.timeout:g} s")
        return RpcError("slow", "its replies did not all arrive in time")

    def _read(self, n: int, end: float | None = None) -> bytes:
        """Exactly n bytes by `end` (the whole read, not each piece)."""
        end = self._end() if end is None else end
        buf = bytearray()
        while len(buf) < n:
            left = end - time.monotonic()
            if left <= 0:
                raise self._late()
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                raise self._late() from None
            except OSError:
                chunk = b""
            if not chunk:
                raise RpcError("closed", "it closed the connection")
            buf += chunk
        return bytes(buf)
