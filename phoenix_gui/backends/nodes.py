"""Another PC that shares its devices over llama.cpp's RPC backend: what it has, how far away it is,
and whether its engine speaks the same RPC protocol as this PC's, all before anything is loaded.

The RPC server itself (rpcwire) gives the protocol version and each device's free/total memory. A node
started with `phoenix share` also serves a small read-only HTTP endpoint on the next port (RPC port + 1)
with the PC's name, the engine, device names and memory bandwidth, and a /blob to time a bulk transfer.
Without it the devices are named by their RPC position and the link's throughput is assumed, and said so.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from pathlib import Path

from ..hardware.cluster import LinkInfo, RemoteNode
from ..hardware.rig import GpuInfo
from ..validate import InputError, host as check_host, port as check_port
from .rpcwire import RpcClient, RpcError, Version

INFO_PORT_OFFSET = 1  # a `phoenix share` serves its info endpoint on the RPC port + 1
INFO_MAX_BYTES = 256 << 10  # an info reply bigger than this is not ours
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
    (round-trip time over the RPC connection itself, throughput to the info endpoint)."""
    host, port = split_address(address)
    rtts: list[float] = []
    try:
        with RpcClient.open(host, port, timeout) as rpc:
            version = rpc.version
            memory = [rpc.device_memory(i) for i in range(rpc.device_count())]
            if measure:
                rtts = [rpc.round_trip_s() for _ in range(RTT_SAMPLES)]
    except RpcError as e:
        raise NodeError(_sentence(address, e)) from None
    info = fetch_info(host, port, min(timeout, 3.0))
    if info and (not isinstance(info.get("devices"), list) or len(info["devices"]) != len(memory)):
        info = None  # the info describes another set of devices (another share on the next port)
    devices = [_device(address, i, free, total, _info_device(info, i)) for i, (free, total) in enumerate(memory)]
    link = None
    if measure:
        rtt_ms = statistics.median(rtts) * 1000 if rtts else 0.0
        mbs = measure_throughput(host, port, rtt_ms / 1000, timeout) if info else None
        link = LinkInfo(rtt_ms=rtt_ms, throughput_mbs=mbs or ASSUMED_MBS, measured=mbs is not None)
    name = str(info.get("name") or address) if info else address
    engine = str(info.get("engine") or "") if info else ""
    return RemoteNode(address=address, name=name, devices=devices, link=link, engine=engine, protocol=str(version))


def _sentence(address: str, e: RpcError) -> str:
    what = {
        "refused": "is up but nothing listens on that port: is `phoenix share` (or rpc-server) running there, "
                   "on this port?",
        "unreachable": f"cannot be reached: {e.detail}; is it on, and on this network?",
        "timeout": f"did not answer ({e.detail}): it is off, or a firewall drops the packets.",
        "silent": f"accepted the connection but did not answer the RPC hello ({e.detail}): its RPC server is busy "
                  "with another main PC (it serves one at a time), or this port is not an RPC server.",
        "closed": "closed the connection in the middle of the RPC exchange: its server stopped or crashed.",
        "denied": "refused this PC: its `phoenix share` lets only the addresses in its --allow list connect; "
                  "add this PC's address there.",
        "not_rpc": f"is not a llama.cpp RPC server ({e.detail}): check the port; the RPC port is the one "
                   "`phoenix share` prints.",
    }[e.kind]
    return f"The PC at {address} {what}"


# --- the info endpoint of `phoenix share` ---

def fetch_info(host: str, port: int, timeout: float) -> dict | None:
    """The node's /info, or None when it has none (a plain rpc-server) or it is not Phoenix's."""
    try:
        conn = http.client.HTTPConnection(host, port + INFO_PORT_OFFSET, timeout=timeout)
        try:
            conn.request("GET", "/info")
            r = conn.getresponse()
            body = r.read(INFO_MAX_BYTES + 1)
        finally:
            conn.close()
        info = json.loads(body) if r.status == 200 and len(body) <= INFO_MAX_BYTES else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    if not isinstance(info, dict) or info.get("service") != "phoenix-share":
        return None  # something else on that port
    return info  # its rpc_port may differ from ours behind a relay or a port forward: not checked


def _info_device(info: dict | None, i: int) -> dict:
    devs = info.get("devices") if info else None
    if isinstance(devs, list) and i < len(devs) and isinstance(devs[i], dict):
        return devs[i]
    return {}


def _num(d: dict, key: str, cast=float, default=0):
    v = d.get(key, default)
    try:
        v = cast(v)
    except (TypeError, ValueError):
        return default
    return v if v == v and v >= 0 else default  # NaN or negative: not usable


def _device(address: str, i: int, free: int, total: int, d: dict) -> GpuInfo:
    """One device of the node. Memory comes from the RPC server (the engine's own view); name, bandwidth
    and architecture from the info endpoint when there is one."""
    cc = str(d.get("compute_capability", "0.0")).split(".")
    try:
        capability = (int(cc[0]), int(cc[1]))
    except (ValueError, IndexError):
        capability = (0, 0)
    bandwidth = _num(d, "bandwidth_gbs")
    return GpuInfo(
        index=i, name=str(d.get("name") or f"RPC{i}[{address}]")[:200], uuid=str(d.get("uuid") or f"rpc:{address}/{i}")[:200],
        pci_bus_id=str(d.get("pci_bus_id") or "")[:64], total_bytes=int(total), free_bytes=int(free),
        used_bytes=max(0, int(total) - int(free)), compute_capability=capability,
        architecture=str(d.get("architecture") or "unknown")[:64], bandwidth_gbs=bandwidth,
        bandwidth_source=str(d.get("bandwidth_source") or "node") if bandwidth else "unknown",
        bus_width_bits=_num(d, "bus_width_bits", int), display_attached=bool(d.get("display_attached", False)),
        driver_version=str(d.get("driver_version") or "")[:64], node=address)


# --- the link ---

def measure_throughput(host: str, port: int, rtt_s: float, timeout: float) -> float | None:
    """MB/s (10^6 bytes/s) main -> node: POSTs of growing size to the node's /blob over one connection until
    one takes BLOB_MIN_S; that last one, less a round trip, gives the rate. The smaller ones before it warm
    the connection up (TCP's slow start and, on a rate-limited link, its first losses happen there). None
    when the node has no info endpoint or the transfer fails."""
    size = BLOB_MIN
    chunk = bytes(1 << 16)
    try:
        conn = http.client.HTTPConnection(host, port + INFO_PORT_OFFSET, timeout=max(timeout, 30.0))
        try:
            while True:
                t = time.perf_counter()
                conn.putrequest("POST", "/blob")
                conn.putheader("Content-Length", str(size))
                conn.endheaders()
                for _ in range(size // len(chunk)):
                    conn.send(chunk)
                r = conn.getresponse()
                reply = json.loads(r.read(4096))
                took = time.perf_counter() - t
                if r.status != 200 or reply.get("bytes") != size:
                    return None
                if took >= BLOB_MIN_S or size >= BLOB_MAX:
                    return size / max(took - rtt_s, took / 2) / 1e6
                size *= 4
        finally:
            conn.close()
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return None


# --- the engines' protocol versions ---

_engine_versions: dict[tuple, Version | None] = {}


def engine_protocol(engine_exe: str | Path) -> Version | None:
    """The RPC protocol the engine at engine_exe speaks, or None when Phoenix cannot tell. A koboldcpp.py
    source tree says it in ggml/include/ggml-rpc.h; any other koboldcpp is started briefly in RPC host
    mode on a free loopback port and asked (its version is compiled in). Cached per file and mtime."""
    path = Path(engine_exe)
    try:
        st = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _engine_versions:
        _engine_versions[key] = _header_version(path) or _asked_version(path)
    return _engine_versions[key]


def _header_version(path: Path) -> Version | None:
    header = path.parent / "ggml" / "include" / "ggml-rpc.h"
    try:
        text = header.read_text(encoding="utf-8", errors="replace")[:100_000]
    except OSError:
        return None
    parts = {}
    for line in text.splitlines():
        bits = line.split()
        if len(bits) == 3 and bits[0] == "#define" and bits[1].startswith("RPC_PROTO_") and bits[2].isdigit():
            parts[bits[1]] = int(bits[2])
    try:
        return Version(parts["RPC_PROTO_MAJOR_VERSION"], parts["RPC_PROTO_MINOR_VERSION"],
                       parts["RPC_PROTO_PATCH_VERSION"])
    except KeyError:
        return None


def _asked_version(path: Path) -> Version | None:
    from .share import ShareHost, ShareError  # the share module starts engines in host mode

    if "kobold" not in path.name.lower():
        return None  # llama-server has no host mode; its rpc-server would be a separate program
    host = ShareHost(path, port=None, info=False, cpu_only=True)
    try:
        host.start(timeout=60.0)
        return host.version
    except ShareError:
        return None
    finally:
        host.stop()


def check_version(node: RemoteNode, engine_exe: str | Path) -> str | None:
    """Before loading: raise NodeError when this PC's engine and the node's RPC server disagree (the engine
    would abort on its first hello). Returns a note when the engine's version cannot be told, else None."""
    mine = engine_protocol(engine_exe)
    if mine is None:
        return (f"Phoenix cannot tell which RPC protocol {Path(engine_exe).name} speaks; {node.name} speaks "
                f"{node.protocol}, and the engine will refuse it at load time if they differ.")
    try:
        theirs = Version.parse(node.protocol)
    except (TypeError, ValueError):
        raise NodeError(f"{node.name} ({node.address}) reported no usable RPC protocol version.") from None
    if not theirs.serves(mine):
        newer = "newer" if theirs > mine else "older"
        raise NodeError(f"{node.name} ({node.address}) runs RPC protocol {theirs}, {newer} than the {mine} of "
                        f"{Path(engine_exe).name} on this PC, so the engine would refuse it: run the same "
                        "koboldcpp or llama.cpp version on both PCs.")
    return None


__all__ = ["NodeError", "describe_node", "check_version", "engine_protocol", "fetch_info", "measure_throughput",
           "split_address", "INFO_PORT_OFFSET"]
