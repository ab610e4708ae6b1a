"""Turn a failed launch (log lines + exit status) into one plain sentence, and a fix for OOM."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass

_OOM_CUDA = re.compile(r"allocating ([\d.]+) MiB on device (\d+): cudaMalloc failed: out of memory")
_OOM_BUF = re.compile(r"failed to allocate (\S+) buffer of size (\d+)")
_OOM_UNABLE = re.compile(r"unable to allocate (\S+) buffer")
_OOM_KV = re.compile(r"failed to allocate buffer for kv cache|failed to initialize the context")
_OOM_COMPUTE = re.compile(r"failed to allocate compute (?:pp )?buffers")
_OOM_GEN = re.compile(r"CUDA error: out of memory")
_CUR_DEV = re.compile(r"current device: (\d+)")
# koboldcpp 1.115.1 says "Both IPv4 and IPv6 cannot bind" (a lone "IPv6 Socket Failed to Bind" is harmless)
_PORT = re.compile(r"(?:couldn't bind|Address already in use|address already in use|bind\(\) failed|Errno 98|Errno 10048|"
                   r"Both IPv4 and IPv6 cannot bind|IPv4 Socket Failed to Bind)", re.I)
_NOMODEL = re.compile(r"(?:failed to open|No such file|does not exist|failed to load model|Could not load text model|"
                      r"error loading model|gguf_init_from_file|Cannot find text model file)", re.I)
_ARCH = re.compile(r"no kernel image is available|no device code compatible|unsupported (?:gpu|architecture)|"
                   r"CUDA driver version is insufficient", re.I)
_CUDA_BUF = re.compile(r"^CUDA(\d+)")
# the engine's own shared library (or one it needs) is missing: Linux dlopen, Windows LoadLibrary wording.
# Checked before _NOMODEL, whose "No such file" would otherwise blame the model file.
_NOLIB = re.compile(r"cannot open shared object file|error while loading shared libraries|Could not find module|"
                    r"specified module could not be found|Library not loaded", re.I)
_LIBNAME = re.compile(r"([\w.+\-]+\.(?:so(?:\.\d+)*|dll|dylib))\b", re.I)
# llama.cpp's RPC client, as koboldcpp 1.115.1 logs it (checked on loopback): each --rpctargets server is
# announced, then each device it gives is "using device RPCn (host:port)". A server that is down or speaks
# another protocol version gives no device (the engine then loads on the CPU without a word, or logs the
# version); one that answers but is not an RPC server, or dies mid-run, aborts the engine.
_RPC_USE = re.compile(r"Use RPC server: (\S+)")
_RPC_DEVICE = re.compile(r"using device RPC\d+ \((\S+)\)")
_RPC_VERSION = re.compile(r"RPC server version mismatch: (\d+\.\d+\.\d+)")
_RPC_LOST = re.compile(r"Remote RPC server crashed or returned malformed response|(?:send|recv) failed \(bytes_")
_LOADING = re.compile(r"load_tensors:")


@dataclass
class Failure:
    kind: str  # "oom", "port", "model", "library", "unsupported", "crash", "signal", "cancelled", "input", "node"
    message: str
    device: int | None = None  # CUDA index in the engine's device list
    requested_mib: float | None = None
    exit_code: int | None = None
    node: str | None = None  # "node": the host:port of the PC at fault, when known

    @property
    def is_oom(self) -> bool:
        return self.kind == "oom"


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except (ValueError, AttributeError):
        return f"signal {-code}"


def pc_name(address: str, nodes: dict[str, str] | None) -> str:
    name = (nodes or {}).get(address, address)
    return name if name == address else f"{name} ({address})"


def missing_nodes(lines: list[str], expected: list[str]) -> list[str]:
    """RPC servers that gave the engine no device although it is placing the model's tensors: it would
    run their layers on this PC's CPU instead. Empty until the log reaches the placement."""
    if not expected or not any(_LOADING.search(ln) for ln in lines):
        return []
    seen = {m.group(1) for ln in lines for m in [_RPC_DEVICE.search(ln)] if m}
    return [a for a in expected if a not in seen]


def node_failure(lines: list[str], nodes: dict[str, str], exit_code: int | None = None) -> Failure | None:
    """A PC sharing its devices over RPC failed the engine: another protocol version, not an RPC server,
    gone mid-run, or no answer at load. Names the PC when the log shows which one."""
    announced = [m.group(1) for ln in lines for m in [_RPC_USE.search(ln)] if m]
    with_device = {m.group(1) for ln in lines for m in [_RPC_DEVICE.search(ln)] if m}
    # koboldcpp connects to the servers one by one: the one announced last without a device is at fault
    pending = [a for a in announced if a not in with_device]
    suspect = pending[-1] if pending else None
    text = "\n".join(lines[-400:])
    m = _RPC_VERSION.search(text)
    if m:
        who = pc_name(suspect, nodes) if suspect else "A PC sharing its devices"
        return Failure("node", f"{who} runs RPC protocol {m.group(1)}, which this engine cannot use: run the same "
                       "koboldcpp or llama.cpp version on both PCs.", exit_code=exit_code, node=suspect)
    if _RPC_LOST.search(text):
        if suspect and not with_device:
            return Failure("node", f"{pc_name(suspect, nodes)} answered, but not as an RPC server (wrong port, or "
                           "another program listens there): check the port `phoenix share` prints.",
                           exit_code=exit_code, node=suspect)
        who = ", ".join(pc_name(a, nodes) for a in nodes) or "a PC sharing its devices"
        return Failure("node", f"The connection to {who} broke: its RPC server stopped or crashed, or the network "
                       "dropped; the server was stopped.", exit_code=exit_code)
    gone = missing_nodes(lines, list(nodes))
    if gone:
        return Failure("node", f"{pc_name(gone[0], nodes)} did not answer when the model loaded (is its RPC server "
                       "running, on this address and port?); the engine would have run its layers on this PC's CPU, "
                       "so it was stopped.", exit_code=exit_code, node=gone[0])
    return None


def classify(lines: list[str], exit_code: int | None, during_load: bool, port: int | None = None,
             device_names: list[str] | None = None, nodes: dict[str, str] | None = None) -> Failure:
    """`nodes`: the PCs whose devices the plan uses over RPC, host:port -> the PC's name (checked first: a
    node that fails makes the engine abort, which would otherwise read as out of memory)."""
    if nodes:
        f = node_failure(lines, nodes, exit_code)
        if f:
            return f
    text = "\n".join(lines[-400:])
    names = device_names or []

    def dev_name(d: int | None) -> str:
        if d is not None and 0 <= d < len(names):
            return names[d]
        return f"GPU {d}" if d is not None else "a GPU"

    m = None
    for m in _OOM_CUDA.finditer(text):
        pass
    if m:
        d, mib = int(m.group(2)), float(m.group(1))
        return Failure("oom", f"Out of memory on {dev_name(d)}: it could not allocate {mib:,.0f} MiB.", d, mib, exit_code)
    for m in _OOM_BUF.finditer(text):
        pass
    if m:
        buf, size = m.group(1), int(m.group(2)) / (1 << 20)
        dm = _CUDA_BUF.match(buf)
        d = int(dm.group(1)) if dm else None
        where = dev_name(d) if d is not None else "system RAM"
        return Failure("oom", f"Out of memory on {where}: the weights ({size:,.0f} MiB) did not fit.", d, size, exit_code)
    um = _OOM_UNABLE.search(text)
    if um:
        dm = _CUDA_BUF.match(um.group(1))
        d = int(dm.group(1)) if dm else None
        return Failure("oom", f"Out of memory on {dev_name(d)}: the model weights did not fit.", d, None, exit_code)
    if _OOM_KV.search(text):
        return Failure("oom", "Out of memory: the KV cache did not fit; lower the context or quantize the cache.", None,
                       None, exit_code)
    if _OOM_COMPUTE.search(text):
        return Failure("oom", "Out of memory: the compute buffers did not fit; lower the batch size or move a layer.",
                       None, None, exit_code)
    if _OOM_GEN.search(text):
        cm = _CUR_DEV.search(text)
        d = int(cm.group(1)) if cm else None
        return Failure("oom", f"Out of memory on {dev_name(d)} while generating.", d, None, exit_code)
    if _PORT.search(text):
        return Failure("port", f"Port {port} is already in use by another program; choose another port.", exit_code=exit_code)
    if _ARCH.search(text):
        return Failure("unsupported", "This server build does not support one of your GPUs (for Pascal and older cards, "
                       "use a CUDA 12 build such as koboldcpp_cu12).", exit_code=exit_code)
    lib_line = next((ln for ln in reversed(lines[-400:]) if _NOLIB.search(ln)), None)
    if lib_line is not None:
        nm = _LIBNAME.search(lib_line)
        lib = f" ({nm.group(1)})" if nm else ""
        return Failure("library", f"The server program could not load its engine library{lib}: the installation "
                       "is incomplete or built for another system; reinstall it or choose another build.",
                       exit_code=exit_code)
    if _NOMODEL.search(text):
        return Failure("model", "The server could not open or read the model file.", exit_code=exit_code)
    if exit_code is not None and exit_code < 0:
        sig = _signal_name(exit_code)
        if during_load:
            # koboldcpp 1.115.1 does not check a failed weight allocation and dies by SIGSEGV
            return Failure("oom" if sig in ("SIGSEGV", "SIGBUS", "SIGABRT") else "signal",
                           f"The server died during loading ({sig}); this is how koboldcpp fails when the weights do "
                           "not fit, so treat it as out of memory.", None, None, exit_code)
        return Failure("signal", f"The server was killed ({sig}).", exit_code=exit_code)
    if exit_code in (139, -11, 3221225477):  # segfault / access violation reported as a code
        return Failure("oom" if during_load else "crash", "The server crashed with an access violation"
                       + (" during loading (out of memory)." if during_load else "."), exit_code=exit_code)
    return Failure("crash", f"The server stopped with exit code {exit_code}." if exit_code is not None
                   else "The server stopped.", exit_code=exit_code)
