"""Another PC that shares its devices over llama.cpp's RPC backend: what it has, how far away it is,
and whether its engine speaks the same RPC protocol as this PC's, all before anything is loaded.

The RPC server itself (rpcwire) gives the protocol version and each device's free/total memory. A node
started with `phoenix share` also serves a small read-only HTTP endpoint on the next port (RPC port + 1)
with the PC's name, the engine, device names and memory bandwidth, and a /blob to time a bulk transfer.
Without it the devices are named by their RPC position and the link's throughput is assumed, and said so.

Everything a node says is treated as hostile: each exchange has an overall deadline (a reply sent a byte at
a time cannot stall Phoenix), what it reports is checked with the rig file's rules before it can become a
plan, and its text is made printable where it enters (network_text).
"""

from __future__ import annotations

import json
import socket
import statistics
import time

from .. import validate as v
from ..hardware.rig import LinkInfo, RemoteNode
from ..hardware.rig import GpuInfo
from ..validate import InputError, host as check_host, port as check_port
from .rpcwire import RpcClient, RpcError

INFO_PORT_OFFSET = 1  # a `phoenix share` serves its info endpoint on the RPC port + 1
INFO_MAX_BYTES = 256 << 10  # an info reply bigger than this is not ours
INFO_S = 3.0  # the most fetching /info may take, all of it
THROUGHPUT_S = 10.0  # the most the link test may take, all of it (on a working link it ends in 1-3 s)
HEAD_MAX = 8 << 10  # an HTTP reply's status line and headers
MEMORY_MAX = 1 << 44  # 16 TiB: a rig file's bound for one device (total_mib up to 2^24)
BANDWIDTH_MAX = 100000.0  # GB/s, a rig file's bound
NAME_MAX = 200
ASSUMED_MBS = 117.0  # gigabit Ethernet's payload rate, when the throughput cannot be measured
RTT_SAMPLES = 9
BLOB_MIN, BLOB_MAX = 256 << 10, 64 << 20  # bulk-transfer sizes tried (x4 each), until one takes BLOB_MIN_S
BLOB_MIN_S = 0.5


class NodeError(InputError):
    """One sentence naming the PC and what is wrong with it."""


def split_address(address: str) -> tuple[str, int]:
    """"host:port" as --rpc takes it. llama.cpp splits at the first colon, so IPv6 addresses cannot be
    RPC targets; a bracketed one is refused with that reason."""
    shown = address if isinstance(address, str) and address.isprintable() and len(address) < 300 else repr(address)[:300]
    if not isinstance(address, str) or ":" not in address:
        raise NodeError(f"{shown} is not an RPC address; give host:port, such as 192.168.1.20:50052.")
    host, _, port = address.strip().partition(":")
    if host.startswith("["):
        raise NodeError(f"{shown} is an IPv6 address; llama.cpp's RPC backend takes only IPv4 addresses "
                        "or host names.")
    try:
        return check_host(host), check_port(port)
    except InputError as e:
        raise NodeError(f"{shown} is not an RPC address: {e}") from None


def describe_node(address: str, timeout: float = 5.0, measure: bool = True) -> RemoteNode:
    """Ask the node at host:port for its protocol version and devices; with measure, also time the link
    (round-trip time over the RPC connection itself, throughput to the info endpoint). The RPC exchange
    takes at most `timeout` in all, /info at most INFO_S, the link test at most THROUGHPUT_S. What the node
    reports must pass a rig file's rules, else NodeError names the PC."""
    host, port = split_address(address)
    rtts: list[float] = []
    try:
        with RpcClient.open(host, port, timeout, deadline=time.monotonic() + timeout) as rpc:
            version = rpc.version
            count = rpc.device_count()
            _check_count(address, count)  # before asking each of them
            memory = [rpc.device_memory(i) for i in range(count)]
            peer = _peer(rpc.sock, host, port)
            if measure:
                rtts = [rpc.round_trip_s() for _ in range(RTT_SAMPLES)]
    except RpcError as e:
        raise NodeError(_sentence(address, e)) from None
    info = fetch_info(host, port, min(timeout, INFO_S))
    if info and (not isinstance(info.get("devices"), list) or len(info["devices"]) != len(memory)):
        info = None  # the info describes another set of devices (another share on the next port)
    devices = [_device(address, i, free, total, _info_device(info, i)) for i, (free, total) in enumerate(memory)]
    link = None
    if measure:
        rtt_ms = statistics.median(rtts) * 1000 if rtts else 0.0
        mbs = measure_throughput(host, port, rtt_ms / 1000, THROUGHPUT_S) if info else None
        link = LinkInfo(rtt_ms=rtt_ms, throughput_mbs=mbs or ASSUMED_MBS, measured=mbs is not None)
    name = network_text(info.get("name"), NAME_MAX) if info else ""
    engine = network_text(info.get("engine"), NAME_MAX) if info else ""
    return RemoteNode(address=address, name=name or address, devices=devices, link=link, engine=engine,
                      protocol=str(version), peer=peer)


def network_text(value, limit: int = NAME_MAX) -> str:
    """Text another PC sent, safe to print anywhere: each control or invisible character (a terminal
    escape, a line break, a bidirectional override) becomes a visible escape such as \\x1b, and the whole
    is cut to `limit`. Applied where node data enters (describe_node, _device), so nothing later sees raw."""
    if value is None:
        return ""
    text = (value if isinstance(value, str) else str(value))[:limit]
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)[:limit]


def _peer(sock: socket.socket, host: str, port: int) -> str:
    """The IPv4 address:port an RPC connection reached, as the engine would reach it (llama.cpp connects
    over IPv4): one PC given by two names gives one peer."""
    try:
        if sock.family == socket.AF_INET:
            ip = sock.getpeername()[0]
        else:
            ip = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except (OSError, IndexError):
        return ""
    return f"{ip}:{port}"


def _check_count(address: str, n: int) -> None:
    if n == 0:
        raise NodeError(f"The PC at {address} shares no device: its RPC server reports none.")
    if n > v.MAX_DEVICES:
        raise NodeError(f"The PC at {address} reports {n} devices; llama.cpp uses at most {v.MAX_DEVICES} in all.")


def _sentence(address: str, e: RpcError) -> str:
    what = {
        "refused": "is up but nothing listens on that port: is `phoenix share` (or rpc-server) running there, "
                   "on this port?",
        "unreachable": f"cannot be reached: {e.detail}; is it on, and on this network?",
        "timeout": f"did not answer ({e.detail}): it is off, or a firewall drops the packets.",
        "silent": f"accepted the connection but did not answer the RPC hello ({e.detail}): its RPC server is busy "
                  "with another main PC (it serves one at a time), or this port is not an RPC server.",
        "slow": f"answered too slowly ({e.detail}): a link this slow cannot carry a model's traffic.",
        "closed": "closed the connection in the middle of the RPC exchange: its server stopped or crashed.",
        "denied": "refused this PC: its `phoenix share` lets only the addresses in its --allow list connect; "
                  "add this PC's address there.",
        "not_rpc": f"is not a llama.cpp RPC server ({e.detail}): check the port; the RPC port is the one "
                   "`phoenix share` prints.",
    }[e.kind]
    return f"The PC at {address} {what}"


# --- the info endpoint of `phoenix share` ---

class _Http:
    """HTTP/1.1 with a share's info endpoint, every exchange on it held to one deadline: http.client's
    timeout bounds each read, so a reply sent a byte at a time would never end. OSError or ValueError on
    any fault, and nothing read is kept beyond a bounded head and the announced body."""

    def __init__(self, host: str, port: int, deadline: float):
        if port > 65535:
            raise ConnectionError("no port after the RPC port")
        self.deadline = deadline
        self.sock = socket.create_connection((host, port), timeout=self._left())
        self.buf = b""

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the exchange ran past its deadline")
        return left

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self._left())  # sendall's timeout covers all of it
        self.sock.sendall(data)

    def _more(self) -> None:
        self.sock.settimeout(self._left())
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def reply(self, max_body: int) -> tuple[int, bytes]:
        """(status, body) of the next reply; its body must be announced and at most max_body bytes."""
        while b"\r\n\r\n" not in self.buf[:HEAD_MAX]:
            if len(self.buf) > HEAD_MAX:
                raise ValueError("reply head too long")
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        lengths = [ln.partition(":")[2].strip() for ln in lines[1:] if ln.partition(":")[0].strip().lower()
                   == "content-length"]
        if len(lengths) != 1 or not lengths[0].isdigit() or int(lengths[0]) > max_body:
            raise ValueError("no usable Content-Length")
        n = int(lengths[0])
        while len(self.buf) < n:
            self._more()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, body

    def close(self) -> None:
        self.sock.close()


def node_answers(address: str, timeout: float = 2.0) -> str:
    """Is another PC's RPC server still there? "" when its port takes a connection (closed at once, before any
    message: the engine may hold the server's one session, and a connection waits in the backlog until then), else
    one sentence naming the PC and why it stopped answering."""
    from .rpcwire import connect

    try:
        host, port = split_address(address)
        connect(host, port, timeout).close()
    except RpcError as e:
        return f"{address} stopped answering: {e.detail}."
    except (InputError, OSError) as e:
        return f"{address} stopped answering ({e})."
    return ""


def fetch_info(host: str, port: int, timeout: float) -> dict | None:
    """The node's /info within `timeout` in all, or None when it has none (a plain rpc-server), it is not
    Phoenix's, or it does not answer in time."""
    try:
        link = _Http(host, port + INFO_PORT_OFFSET, time.monotonic() + timeout)
        try:
            link.send(f"GET /info HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            status, body = link.reply(INFO_MAX_BYTES)
        finally:
            link.close()
        info = json.loads(body) if status == 200 else None
    except (OSError, ValueError, IndexError, RecursionError):  # RecursionError: JSON nested 100,000 deep
        return None
    if not isinstance(info, dict) or info.get("service") != "phoenix-share":
        return None  # something else on that port
    return info  # its rpc_port may differ from ours behind a relay or a port forward: not checked


def _info_device(info: dict | None, i: int) -> dict:
    devs = info.get("devices") if info else None
    if isinstance(devs, list) and i < len(devs) and isinstance(devs[i], dict):
        return devs[i]
    return {}


def _device(address: str, i: int, free: int, total: int, d: dict) -> GpuInfo:
    """One device of the node, checked as a rig file's device is. Memory comes from the RPC server (the
    engine's own view); name, bandwidth and architecture from the info endpoint when there is one."""
    if not 1 << 20 <= total <= MEMORY_MAX:
        raise NodeError(f"The PC at {address} reports {total:,} bytes of memory on its device {i}, which no "
                        "real device has.")
    if free > total:
        raise NodeError(f"The PC at {address} reports more free memory than in total on its device {i} "
                        f"({free:,} of {total:,} bytes).")
    given = lambda key: 0 if d.get(key) is None else d[key]  # noqa: E731 - absent: not known
    try:
        bandwidth = v.number(given("bandwidth_gbs"), f"device {i}'s bandwidth_gbs", 0, BANDWIDTH_MAX)
        bus_bits = v.integer(given("bus_width_bits"), f"device {i}'s bus_width_bits", 0, 1 << 16)
    except InputError as e:
        raise NodeError(f"The PC at {address} sent unusable device data: {e}") from None
    cc = network_text(d.get("compute_capability", "0.0"), 16).split(".")
    capability = (int(cc[0]), int(cc[1])) if len(cc) == 2 and all(p.isdigit() and len(p) < 3 for p in cc) else (0, 0)
    text = lambda key, limit=64: network_text(d.get(key), limit)  # noqa: E731
    return GpuInfo(
        index=i, name=text("name", NAME_MAX) or f"RPC{i}[{address}]", uuid=text("uuid", NAME_MAX) or f"rpc:{address}/{i}",
        pci_bus_id=text("pci_bus_id"), total_bytes=int(total), free_bytes=int(free), used_bytes=int(total) - int(free),
        compute_capability=capability, architecture=text("architecture") or "unknown", bandwidth_gbs=bandwidth,
        bandwidth_source=(text("bandwidth_source", NAME_MAX) or "node") if bandwidth else "unknown",
        bus_width_bits=bus_bits, display_attached=d.get("display_attached") is True,
        driver_version=text("driver_version"), node=address)


# --- the link ---

def measure_throughput(host: str, port: int, rtt_s: float, timeout: float = THROUGHPUT_S) -> float | None:
    """MB/s (10^6 bytes/s) main -> node: POSTs of growing size to the node's /blob over one connection until
    one takes BLOB_MIN_S; that last one, less a round trip, gives the rate. The smaller ones before it warm
    the connection up (TCP's slow start and, on a rate-limited link, its first losses happen there). None
    when the node has no info endpoint, the transfer fails, or it does not end within `timeout` in all."""
    size = BLOB_MIN
    chunk = bytes(1 << 16)
    try:
        link = _Http(host, port + INFO_PORT_OFFSET, time.monotonic() + timeout)
        try:
            while True:
                t = time.perf_counter()
                link.send(f"POST /blob HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n".encode())
                for _ in range(size // len(chunk)):
                    link.send(chunk)
                status, body = link.reply(4096)
                took = time.perf_counter() - t
                reply = json.loads(body)
                if status != 200 or not isinstance(reply, dict) or reply.get("bytes") != size:
                    return None
                if took >= BLOB_MIN_S or size >= BLOB_MAX:
                    return size / max(took - rtt_s, took / 2) / 1e6
                size *= 4
        finally:
            link.close()
    except (OSError, ValueError, IndexError, RecursionError):
        return None


__all__ = ["NodeError", "describe_node", "fetch_info", "measure_throughput", "network_text", "split_address",
           "INFO_PORT_OFFSET"]
