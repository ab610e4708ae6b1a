"""Ports: a free one, a free one with free neighbours, and whether (or why not) a server could listen on
host:port. The one home of port picking for the server, the share host, the tuner and the wizard."""

from __future__ import annotations

import errno
import os
import socket
import threading

from ...validate import InputError
from ...validate import host as valid_host
from ...validate import port as valid_port

RESOLVE_TIMEOUT_S = 5.0


def free_port() -> int:
    """A port free on 127.0.0.1 now (the system's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_with(offsets: list[int], host: str = "127.0.0.1", tries: int = 50) -> int | None:
    """A free port whose neighbours at these offsets are free too (the share's info endpoint sits beside
    its RPC port: a free port alone can have a taken neighbour); None when `tries` picks found none."""
    where = "127.0.0.1" if host in ("0.0.0.0", "localhost") else host
    for _ in range(tries):
        p = free_port()
        if all(p + o <= 65535 and not address_problem(where, p + o) for o in offsets):
            return p
    return None


def port_free(host: str, port: int) -> bool:
    """Could a server listen on host:port now? False for a bad host or port too."""
    return address_problem(host, port) is None


def address_problem(host: str, port) -> str | None:
    """Why a server could not listen on host:port, as one sentence (None when it could): a port
    outside 1..65535, a malformed host, a host name that does not resolve, an address that is not
    this computer's, or a port another program holds. Only the last one is "in use"."""
    try:
        port = valid_port(port)
        if host not in ("", "0.0.0.0", "::"):
            valid_host(host)
    except InputError as e:
        return str(e)
    h = "127.0.0.1" if host in ("", "0.0.0.0") else host.strip().strip("[]")
    addr = _resolve(h, port)
    if isinstance(addr, str):
        return addr
    fam, sockaddr = addr
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        if os.name != "nt":
            # as the servers do: connections in TIME_WAIT do not block a new listener
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE or getattr(e, "winerror", None) == 10048:
                return f"Port {port} is already in use by another program; choose another port."
            if e.errno == errno.EADDRNOTAVAIL or getattr(e, "winerror", None) == 10049:
                return (f"{host} is not an address of this computer, so a server cannot listen on it; use 127.0.0.1 "
                        "(this computer only) or 0.0.0.0 (the whole network).")
            if e.errno == errno.EACCES:
                return f"Port {port} needs administrator rights here; choose a port from 1024 to 65535."
            return f"A server cannot listen on {host} port {port} ({e.strerror or e})."
    return None


def _resolve(host: str, port: int):
    """(family, sockaddr) of the host's first address, or a sentence. A name lookup can hang on a broken
    network, so it gets RESOLVE_TIMEOUT_S."""
    got: list = []

    def look():
        try:
            got.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as e:
            got.append(e)

    t = threading.Thread(target=look, daemon=True, name="resolve-host")
    t.start()
    t.join(RESOLVE_TIMEOUT_S)
    if not got:
        return f"The host name {host} could not be looked up within {RESOLVE_TIMEOUT_S:.0f} s; use an address such as 127.0.0.1."
    if isinstance(got[0], Exception) or not got[0]:
        return f"The host name {host} cannot be resolved to an address; use an address such as 127.0.0.1."
    fam, _, _, _, sockaddr = got[0][0]
    return fam, sockaddr
