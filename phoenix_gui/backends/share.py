"""Share this PC's devices with a main PC: the engine's RPC host mode, supervised like any server, plus a
small read-only HTTP info endpoint beside it (RPC port + 1) for what the RPC protocol does not say.

llama.cpp's RPC protocol has no authentication: whoever reaches the port can allocate memory and run
graphs. So the engine listens on 127.0.0.1 unless the user picks an interface, and with an allow-list it
always listens on 127.0.0.1 while a Phoenix relay on the chosen address forwards only connections from
the listed addresses (the engine itself has no such option). An allow-list given empty is refused, never
taken as "no list". What the relay cannot guard: the engine's own port on 127.0.0.1, which every account
on this PC can reach (koboldcpp's RPC host takes only a TCP host and port: no socket file whose owner
alone may connect, no secret); so local users are trusted, and the warnings say so.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
import threading
import time
from pathlib import Path

from ..engines import engine_for_host
from ..validate import InputError, host as check_host, port as check_port
from .infoserver import InfoServer
from .nodes import INFO_PORT_OFFSET
from .processes.ports import address_problem, free_port, free_port_with
from .processes.process import ServerProcess, engine_version
from .processes.states import IllegalTransition, Machine
from .rpcwire import REFUSAL, RpcClient, RpcError, Version

LOOPBACK_NAMES = ("localhost",)
MAX_ALLOW = 64  # allow-list entries: a main PC or a few, a network or two
MAX_REFUSING = 8  # refusals being said at once by the relay; beyond, a peer is cut off without a word
LOCAL_USERS = ("Other accounts on this PC are not checked: the engine listens on 127.0.0.1, where any local user "
               "can reach it without passing the allow-list, so share only from a PC whose users you trust.")


class ShareError(InputError):
    """Why sharing could not start, in one sentence."""


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allow_list(items) -> list:
    """Client addresses or networks ("192.168.1.20", "192.168.1.0/24"), one sentence on a bad one. A list
    given empty (an unset variable, stray commas) is refused: taken as "no list" it would let anyone in."""
    if isinstance(items, str):
        items = items.split(",")
    if not isinstance(items, (list, tuple)):
        raise ShareError("The allow-list must be addresses or networks separated by commas, such as "
                         "192.168.1.20,10.0.0.0/24.")
    if not any(str(raw).strip() for raw in items):
        raise ShareError("The allow-list is empty (an unset variable?); give the main PC's address, such as "
                         "192.168.1.20: an empty list would let every computer connect.")
    if len(items) > MAX_ALLOW:
        raise ShareError(f"The allow-list has {len(items)} entries; give at most {MAX_ALLOW} (use a network such as "
                         "192.168.1.0/24 for many).")
    out = []
    for raw in items:
        text = str(raw).strip()
        if not text:
            raise ShareError("The allow-list has an empty entry; separate addresses with single commas.")
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            shown = text if text.isprintable() and len(text) < 60 else repr(text[:60])
            raise ShareError(f"{shown!s} in the allow-list is not an IP address or network (such as "
                             "192.168.1.20 or 192.168.1.0/24).") from None
    return out


class ShareState(str, enum.Enum):
    IDLE = "idle"
    STARTING = "starting"  # the engine runs, not yet answering the RPC hello
    SHARING = "sharing"
    ENDED = "ended"  # the engine stopped by itself while sharing
    FAILED = "failed"  # sharing could not start; nothing is left running
    STOPPING = "stopping"
    STOPPED = "stopped"


H = ShareState
ALLOWED: dict[ShareState, set[ShareState]] = {
    H.IDLE: {H.STARTING, H.STOPPED},
    H.STARTING: {H.SHARING, H.FAILED},  # Ctrl-C while starting fails the start: start() cleans up
    H.SHARING: {H.ENDED, H.STOPPING},
    H.ENDED: {H.STOPPING},  # the relay and the info endpoint still run
    H.FAILED: set(),
    H.STOPPING: {H.STOPPED},
    H.STOPPED: set(),
}


class ShareHost(Machine):
    """The RPC host of this PC, a machine of ShareStates. start() returns once the engine answers the RPC
    hello (sharing) or raises ShareError (failed); poll() notices an engine that stopped by itself (ended);
    stop() leaves nothing running. port=None takes a free one; info=False serves no info endpoint;
    cpu_only shares just the CPU. One start per host."""

    ALLOWED = ALLOWED

    def __init__(self, exe, host: str = "127.0.0.1", port: int | None = 50052, devices=None, allow=None,
                 info_port: int | None = None, info: bool = True, cpu_only: bool = False, log_path=None,
                 on_line=None):
        super().__init__(ShareState.IDLE)
        self.exe = str(exe)
        self.engine = engine_for_host(self.exe)  # koboldcpp's host mode, or llama.cpp's rpc-server
        self.host = check_host(host) if host != "0.0.0.0" else host
        if ":" in self.host:  # llama.cpp splits an RPC endpoint at its first colon
            raise ShareError(f"{self.host} is an IPv6 address; a main PC's engine can reach RPC servers only by "
                             "IPv4 address or host name, so share on an IPv4 address (or 0.0.0.0).")
        self.port = check_port(port) if port is not None else free_port_with(
            [INFO_PORT_OFFSET] if info and not info_port else [], host)
        if self.port is None:
            raise ShareError("No free pair of ports was found on this PC; give one with --port.")
        self.devices = [_device_name(d) for d in (devices or [])]
        self.allow = allow_list(allow) if allow is not None else []  # given empty: refused, never open
        self.info_port = None if not info else check_port(info_port or self.port + INFO_PORT_OFFSET)
        self.cpu_only = cpu_only
        self.log_path, self.on_line = log_path, on_line
        self.version: Version | None = None
        self.engine_devices: list[dict] = []  # from the engine's own device list, in RPC order
        self.engine_name = ""
        self.refused: list[str] = []  # peers the relay turned away
        self._proc: ServerProcess | None = None
        self._relay: _AllowRelay | None = None
        self._info: InfoServer | None = None
        # with an allow-list the engine sits behind the relay on loopback
        self.engine_host = "127.0.0.1" if self.allow else ("127.0.0.1" if host in ("localhost",) else self.host)
        self.engine_port = self.port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def addresses_to_type(self) -> list[str]:
        """What to type on the main PC: the address itself, or for 0.0.0.0 each IPv4 address of this PC."""
        if self.host != "0.0.0.0":
            return [self.address]
        import psutil

        ips = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
               if a.family == socket.AF_INET and not a.address.startswith("127.")]
        return [f"{ip}:{self.port}" for ip in ips] or [f"127.0.0.1:{self.port}"]

    @property
    def info_url(self) -> str | None:
        return f"http://{self.host}:{self.info_port}/info" if self.info_port else None

    def warnings(self) -> list[str]:
        if is_loopback(self.host):
            return []
        w = [f"llama.cpp's RPC protocol has no password or encryption: any computer that can reach {self.address} "
             "can use this PC's devices and memory."]
        if self.allow:
            w.append("Phoenix lets only " + ", ".join(str(a) for a in self.allow) + " connect (the engine listens "
                     "on 127.0.0.1 behind a Phoenix relay that checks each connection's address).")
            w.append(LOCAL_USERS)
        else:
            w.append("Give --allow with the main PC's address so that only it may connect.")
        return w

    # --- life ---
    def start(self, timeout: float = 60.0) -> "ShareHost":
        if self.state is not ShareState.IDLE:
            raise IllegalTransition(f"start() in state {self.state.value}")
        self._to(ShareState.STARTING, message=f"Starting {Path(self.exe).name} in RPC host mode…")
        try:
            self._start(timeout)
        except BaseException as e:
            self._close()
            self._to(ShareState.FAILED, message=str(e) or "Sharing was cancelled.")
            raise
        self._to(ShareState.SHARING, message=f"Sharing on {self.address}.")
        return self

    def _start(self, timeout: float) -> None:
        import shutil

        if not Path(self.exe).is_file() and not shutil.which(self.exe):
            raise ShareError(f"{self.exe} does not exist; give koboldcpp, koboldcpp.py or llama.cpp's rpc-server.")
        if self.allow:
            self.engine_port = free_port()
        for h, p in {(self.host, self.port), (self.engine_host, self.engine_port)} | (
                {(self.host, self.info_port)} if self.info_port else set()):
            problem = address_problem(h, p)
            if problem:
                raise ShareError(problem)
        self.engine_name = self._engine_label() if self.info_port else ""  # for the info endpoint only
        argv = self.engine.host_argv(self.exe, self.engine_host, self.engine_port, self.devices, self.cpu_only)
        self._proc = ServerProcess(argv, env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, log_path=self.log_path,
                                   on_line=self.on_line)
        try:
            self._proc.start()
        except OSError as e:
            self._proc = None
            raise ShareError(f"{self.exe} cannot be started ({e.strerror or e}).") from None
        self._wait_listening(timeout)
        self._proc.wait_output(0.2)
        self.engine_devices = self.engine.rpc_devices(self.output())
        self._check_devices()
        if self.allow:
            self._relay = _AllowRelay(self.host, self.port, self.engine_port, self.allow, self.refused).start()
        if self.info_port:
            self._info = InfoServer(self.host, self.info_port, self.info,
                                    lambda ip: _allowed(ip, self.allow)).start()

    def poll(self) -> int | None:
        """None while the engine runs, else its exit code; sharing -> ended when it stopped by itself."""
        code = self._proc.poll() if self._proc else None
        if code is not None and self.state is ShareState.SHARING:
            self._to(ShareState.ENDED, code=code, message=f"The engine stopped (exit code {code}).")
        return code

    def stop(self) -> None:
        """Stop sharing; nothing is left running. Nothing to do before start() or after a failed one."""
        if self.state is ShareState.IDLE:
            self._to(ShareState.STOPPED)
        if self.state in (ShareState.SHARING, ShareState.ENDED):
            self._to(ShareState.STOPPING, message="Stopping…")
            self._close()
            self._to(ShareState.STOPPED, message="Sharing stopped.")
        else:
            self._close()  # failed or stopped: closed already; closing again is harmless

    def _close(self) -> None:
        if self._info:
            self._info.stop()
            self._info = None
        if self._relay:
            self._relay.stop()
            self._relay = None
        if self._proc:
            self._proc.stop(timeout=5.0)

    def __enter__(self) -> "ShareHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def output(self) -> list[str]:
        return list(self._proc.lines) if self._proc else []

    # --- the engine ---
    def _engine_label(self) -> str:
        e = self.engine
        return e.host_label(engine_version(e, self.exe, timeout=30.0) if e.host_label_versioned else None)

    def _wait_listening(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            code = self._proc.poll()
            if code is not None:
                self._proc.wait_output(2)
                raise ShareError(f"{Path(self.exe).name} stopped (exit code {code}) before it shared anything: "
                                 f"{_last_words(self.output())}")
            try:
                with RpcClient.open(self.engine_host, self.engine_port, timeout=2.0) as rpc:
                    self.version = rpc.version
                    return
            except RpcError:
                time.sleep(0.2)
        raise ShareError(f"{Path(self.exe).name} did not start sharing on {self.engine_host}:{self.engine_port} "
                         f"within {timeout:g} s.")

    def _check_devices(self) -> None:
        """koboldcpp drops a device name it does not know and shares its GPUs (or the CPU) instead, silently;
        so a requested device missing from the engine's own list stops the share."""
        have = [d["engine_name"] for d in self.engine_devices]
        missing = [d for d in self.devices if d not in have]
        if missing and have:
            raise ShareError(f"{Path(self.exe).name} has no device {', '.join(missing)} (it would share "
                             f"{', '.join(have)} instead); its devices are named as in its own list, such as CUDA0.")

    def info(self) -> dict:
        """What the main PC's describe_node reads: this PC, the engine, and each device in RPC order."""
        return {"service": "phoenix-share", "name": socket.gethostname(), "engine": self.engine_name,
                "protocol": str(self.version) if self.version else "", "rpc_port": self.port,
                "devices": [_enriched(d) for d in self.engine_devices]}


def _device_name(d) -> str:
    text = f"CUDA{d}" if isinstance(d, int) or (isinstance(d, str) and d.strip().isdigit()) else str(d).strip()
    if not re.fullmatch(r"[A-Za-z]{2,16}\d{0,3}", text):
        raise ShareError(f"{text[:40]!r} is not a device name such as CUDA0 (or a GPU number such as 0).")
    return text


def _enriched(d: dict) -> dict:
    """One engine device with what this PC knows about it: NVML (CUDAn under PCI bus order is NVML's n-th
    GPU) or, for the CPU, system RAM and its measured bandwidth. Memory is read now, not at start."""
    out = {"name": d["description"], "engine_name": d["engine_name"], "total_bytes": d["total_bytes"],
           "free_bytes": d["free_bytes"]}
    m = re.fullmatch(r"CUDA(\d+)", d["engine_name"])
    if m:
        from ..hardware.nvml import detect_gpus

        try:
            gpus = detect_gpus()[0]
        except Exception:  # noqa: BLE001
            gpus = []
        i = int(m.group(1))
        if i < len(gpus):
            g = gpus[i].to_dict()
            out.update({k: g[k] for k in ("name", "uuid", "pci_bus_id", "total_bytes", "free_bytes", "architecture",
                                          "compute_capability", "bandwidth_gbs", "bandwidth_source", "bus_width_bits",
                                          "display_attached", "driver_version")})
    elif d["engine_name"] == "CPU":
        import psutil

        from ..hardware.system import ram_bandwidth

        bw, src = ram_bandwidth()
        out.update({"name": f"CPU ({d['description']})", "architecture": "CPU", "bandwidth_gbs": bw,
                    "bandwidth_source": f"RAM, {src}", "free_bytes": int(psutil.virtual_memory().available)})
    return out


def _last_words(lines: list[str]) -> str:
    useful = [s.strip() for s in lines if s.strip()][-3:]
    return " / ".join(useful)[-300:] or "it printed nothing."


def _allowed(peer: str, allowed: list) -> bool:
    if not allowed:
        return True
    try:
        ip = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in allowed)


# --- the allow-list relay ---

def _refuse(conn: socket.socket) -> None:
    """Say why, in a form Phoenix's RPC client recognises, then hang up. What the peer sent is drained
    first: closing with unread data resets the connection, and a reset can discard our answer."""
    try:
        conn.settimeout(1.0)
        conn.sendall(REFUSAL + b" this address is not on the allow-list\n")
        conn.shutdown(socket.SHUT_WR)
        end = time.monotonic() + 1.0
        while time.monotonic() < end and conn.recv(4096):
            pass
    except OSError:
        pass
    conn.close()


class _AllowRelay:
    """Listens on the shared address; forwards a connection to the engine on 127.0.0.1 only when the peer's
    address is allowed, else closes it at once (and remembers who)."""

    def __init__(self, host: str, port: int, engine_port: int, allowed: list, refused: list):
        self.host, self.port, self.engine_port = host, port, engine_port
        self.allowed, self.refused = allowed, refused
        self._refusing = threading.BoundedSemaphore(MAX_REFUSING)  # a flood of strangers: bounded threads
        self._sock: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> "_AllowRelay":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(16)
        self._sock = s
        threading.Thread(target=self._accept, name="share-relay", daemon=True).start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            if not _allowed(peer[0], self.allowed):
                if len(self.refused) < 1000:
                    self.refused.append(peer[0])
                if self._refusing.acquire(blocking=False):
                    threading.Thread(target=self._refuse, args=(conn,), name="share-refuse", daemon=True).start()
                else:
                    conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.engine_port), timeout=5.0)
                upstream.settimeout(None)
            except OSError:
                conn.close()
                continue
            for s in (conn, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns |= {conn, upstream}
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), name="share-pump", daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        try:
            _refuse(conn)
        finally:
            self._refusing.release()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):  # one side gone: end both, as a direct connection would
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
            with self._lock:
                self._conns.discard(s)

    def stop(self) -> None:
        self._stopped.set()
        if self._sock:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close alone may not)
            except OSError:
                pass
            self._sock.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
