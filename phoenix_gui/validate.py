"""The one validation layer: every value that crosses a boundary (command line, rig file, .kcpps,
settings file, wizard field) is checked here, and a bad one raises InputError with one sentence.

Qt-free and at the bottom of the layers, so the CLI, the wizard, the file readers and the planner's
last-line check all share the same rules and the same wording.
"""

from __future__ import annotations

import math
import os
import re
import stat
from pathlib import Path

# the engines' own limits (llama.cpp: GGML_CUDA_MAX_DEVICES = 16; koboldcpp 1.115.1's argparse rules)
MAX_DEVICES = 16
CONTEXT_MIN = 256
CONTEXT_MAX = {"koboldcpp": 262144, "llama-server": 1 << 24}
DEFAULT_CONTEXT = 4096  # tokens when the user has not said (planner/settings.py default_context)
KOBOLD_BATCHES = (-1, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BATCH_MAX = 8192
INT32_MAX = (1 << 31) - 1
TIMEOUT_MAX_S = 7 * 24 * 3600.0
GGUF_MAGIC = b"GGUF"

CACHE_TYPES = ("f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "f32")
BACKENDS = ("koboldcpp", "llama-server")
OBJECTIVES = ("fastest", "context", "headroom")

_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


class InputError(ValueError):
    """A value Phoenix cannot use; the message is one plain sentence for the user."""


# --- numbers ---

def number(value, what: str, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number (not a bool, not text) within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number, not {_show(value)}.")
    try:
        v = float(value)
    except OverflowError:
        raise InputError(f"{what} is far too large ({_show(value)}).") from None
    if not math.isfinite(v):
        raise InputError(f"{what} must be a finite number, not {_show(value)}.")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise InputError(f"{what} must be {_range(lo, hi)}, not {_show(value)}.")
    return v


def integer(value, what: str, lo: int | None = None, hi: int | None = None) -> int:
    """A whole number within [lo, hi]; 4096.0 is accepted, 4096.5, True and "4096" are not."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be a whole number, not {_show(value)}.")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise InputError(f"{what} must be {_range(lo, hi)}, not {_show(value)}.")
    return value


def _range(lo, hi) -> str:
    fmt = lambda x: f"{x:g}" if isinstance(x, float) else str(x)  # noqa: E731
    if lo is not None and hi is not None:
        return f"between {fmt(lo)} and {fmt(hi)}"
    return f"at least {fmt(lo)}" if lo is not None else f"at most {fmt(hi)}"


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- plan settings ---

def context(value, backend: str = "koboldcpp") -> int:
    hi = CONTEXT_MAX.get(backend, CONTEXT_MAX["koboldcpp"])
    return integer(value, "The context", CONTEXT_MIN, hi)


def batch(value) -> int:
    return integer(value, "The batch size", 1, BATCH_MAX)


def gpulayers(value) -> int | None:
    """None = every layer; otherwise 0 .. 2^31-1 (the engines read it as a C int)."""
    if value is None:
        return None
    return integer(value, "The GPU layers", 0, INT32_MAX)


def moecpu(value) -> int:
    return integer(value, "The MoE expert offload (moecpu)", 0, INT32_MAX)


def split(values, n_devices: int | None = None) -> tuple[float, ...]:
    """Split weights: finite, not negative, not all zero, at most one per device (and at most 16)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InputError(f"A split is a list of numbers, not {_show(values)}.")
    vals = tuple(number(v, "Each split weight", 0) for v in values)
    if not vals:
        raise InputError("A split needs at least one weight.")
    limit = MAX_DEVICES if n_devices is None else min(n_devices, MAX_DEVICES)
    if len(vals) > limit:
        if n_devices is not None and n_devices < MAX_DEVICES:
            raise InputError(f"{len(vals)} split values for {n_devices} GPU(s): give at most one per GPU.")
        raise InputError(f"{len(vals)} split values: llama.cpp takes at most {MAX_DEVICES}.")
    if not any(vals):
        raise InputError("Split weights cannot all be zero.")
    return tuple(split_weights(vals))


# only a split's ratios matter; what reaches an engine is printed with 4 decimals and read as a C float
SPLIT_DECIMALS = 4
SPLIT_TOP = (0.01, 1e6)  # a largest weight in here keeps the weights as given (1.5 4.5 3, layer counts, MiB)


def split_weights(values) -> list[float]:
    """Split weights as an engine gets them: when the largest lies outside SPLIT_TOP, all are divided by it
    (1e308 three times would sum to infinity and print as 309 digits an engine reads as infinity; 1e-300
    would print as 0, which an engine reads as "no split"), so equal weights stay equal whatever their
    magnitude; then rounded to SPLIT_DECIMALS. Anything not finite or not positive counts as 0 (split()
    refuses it first). Idempotent: the planner, the command lines and the .kcpps all pass through it."""
    w = []
    for x in values:
        try:
            x = float(x)
        except (TypeError, ValueError, OverflowError):
            x = 0.0
        w.append(x if 0 < x < math.inf else 0.0)
    top = max(w, default=0.0)
    if top and not SPLIT_TOP[0] <= top <= SPLIT_TOP[1]:
        w = [x / top for x in w]
    return [round(x, SPLIT_DECIMALS) for x in w]


def devices(indices, n_gpus: int) -> tuple[int, ...]:
    """GPU indices in engine order: each once, each on the rig, at most 16."""
    out = tuple(integer(i, "A GPU index", 0) for i in indices)
    for i in out:
        if i >= n_gpus:
            raise InputError(f"There is no GPU {i} on this rig (it has {n_gpus}).")
    seen = set()
    for i in out:
        if i in seen:
            raise InputError(f"GPU {i} is listed twice; list each GPU once.")
        seen.add(i)
    if len(out) > MAX_DEVICES:
        raise InputError(f"{len(out)} GPUs: llama.cpp uses at most {MAX_DEVICES}.")
    return out


def choice(value, what: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise InputError(f"Unknown {what} {_show(value)}; choose one of {', '.join(options)}.")
    return value


def mib(value, what: str, hi: float = 65536.0) -> float:
    return number(value, what, 0.0, hi)


def timeout(value) -> float:
    """Seconds to wait: finite and positive (NaN would never time out)."""
    return number(value, "The timeout (seconds)", 0.001, TIMEOUT_MAX_S)


# --- network ---

def port(value) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():  # not "¹" or "٣"
        value = int(value.strip())
    return integer(value, "The port", 1, 65535)


def host(value) -> str:
    """An IPv4/IPv6 address or a DNS host name: no spaces, no control characters, no shell syntax."""
    if not isinstance(value, str):
        raise InputError(f"The host must be text, not {_show(value)}.")
    h = value.strip()
    if not h:
        raise InputError("The host is empty; give an address such as 127.0.0.1.")
    if len(h) > 253 or not h.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in h):
        raise InputError(f"{_show(h)} is not a host name or address.")
    if ":" in h:  # IPv6, possibly in brackets
        import ipaddress

        try:
            ipaddress.IPv6Address(h.strip("[]").split("%")[0])
        except ValueError:
            raise InputError(f"{_show(h)} is not a host name or address.") from None
        return h
    labels = h.rstrip(".").split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise InputError(f"{_show(h)} is not a host name or address.")
    if all(label.isdigit() for label in labels):
        import ipaddress

        try:
            ipaddress.IPv4Address(h)
        except ValueError:
            raise InputError(f"{_show(h)} is not an IP address.") from None
    return h



def rpc_targets(value) -> list[str]:
    """"ip:port,ip:port" for --rpc / --rpctargets: each a host and a port, none twice. llama.cpp's RPC
    client splits an endpoint at its first colon and connects over IPv4 only, so IPv6 is refused."""
    if not isinstance(value, str):
        raise InputError(f"The RPC address list must be text, not {_show(value)}.")
    if any(ord(c) < 32 or ord(c) == 127 or 0x80 <= ord(c) <= 0x9F for c in value):
        raise InputError("The RPC address list contains a control character such as a line break.")
    parts = [p.strip() for p in value.split(",")]
    if not any(parts):
        raise InputError("No RPC address given; write host:port, such as 192.168.1.20:50052.")
    if len(parts) > MAX_DEVICES:
        raise InputError(f"{len(parts)} RPC addresses given; llama.cpp uses at most {MAX_DEVICES} devices.")
    out: list[str] = []
    for p in parts:
        if not p:
            raise InputError(f"The RPC address list {_show(value.strip())} has an empty entry; separate addresses "
                             "with single commas.")
        if p.startswith("[") or p.count(":") > 1:
            raise InputError(f"{_show(p)} is an IPv6 address; llama.cpp's RPC backend connects over IPv4 only, so "
                             "give the PC's IPv4 address or host name.")
        h, sep, pt = p.rpartition(":")
        if not sep or not h:
            raise InputError(f"{_show(p)} needs a port: write host:port, such as 192.168.1.20:50052.")
        h = host(h)
        try:
            n = port(pt)
        except InputError:
            raise InputError(f"{_show(p)} has no valid port (1-65535 after the colon).") from None
        addr = f"{h.lower()}:{n}"
        if addr in out:
            raise InputError(f"{addr} is listed twice; each RPC server can be used once.")
        out.append(addr)
    return out


# --- text ---

def text(value, what: str, max_len: int = 4096) -> str:
    """Plain text: a string without control characters (a NUL or CR/LF would break a path or a script)."""
    if not isinstance(value, str):
        raise InputError(f"{what} must be text, not {_show(value)}.")
    if len(value) > max_len or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{what} contains control characters or is too long.")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise InputError(f"{what} is not valid UTF-8 text.")
    return value


# --- files ---

def regular_file(path: str | Path, what: str = "The file") -> os.stat_result:
    """stat() a path that must be an existing regular file. Opening a FIFO or a device blocks or
    reads forever, so this is checked before any open()."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist.") from None
    except ValueError:  # an embedded NUL
        raise InputError(f"{what} name contains a NUL character.") from None
    except OSError as e:
        raise InputError(f"{what} {path} cannot be read ({e.strerror or e}).") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a folder, not a file.")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is not a regular file (a pipe, socket or device), so Phoenix does not open it.")
    return st


def read_text(path: str | Path, what: str = "The file", max_bytes: int = 16 << 20, encoding: str = "utf-8") -> str:
    """A small text file, checked to be a regular file first; raises InputError with one sentence."""
    st = regular_file(path, what)
    if st.st_size > max_bytes:
        raise InputError(f"{what} {Path(path).name} is too large ({st.st_size:,} bytes) for what it should hold.")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise InputError(f"{what} {path} cannot be read ({e.strerror or e}).") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise InputError(f"{what} {Path(path).name} is not UTF-8 text.") from None


def is_gguf(path: str | Path) -> bool:
    """A .gguf name, or any regular file that starts with the GGUF magic (a renamed model)."""
    p = Path(path)
    if p.suffix.lower() == ".gguf":
        return True
    try:
        st = os.stat(p)
        if not stat.S_ISREG(st.st_mode):
            return False
        with open(p, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except (OSError, ValueError):
        return False


def check_writable(path: str | Path, force: bool = False, what: str = "file") -> Path:
    """May Phoenix write `path`? Never over a model (a .gguf or a file with the GGUF magic), never
    over anything that is not a regular file, and over an existing file only with force.
    Raises InputError with one sentence; returns the path."""
    if isinstance(path, str):
        text(path, f"The {what} name")
    p = Path(path)
    if is_gguf(p):
        raise InputError(f"{p.name} is a model file; Phoenix never writes over a model (choose another name).")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        if not p.parent.is_dir():
            raise InputError(f"The folder {p.parent} does not exist.") from None
        return p
    except OSError as e:
        raise InputError(f"Cannot write {p} ({e.strerror or e}).") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p} exists and is not a regular file; Phoenix does not write over it.")
    if not force:
        raise InputError(f"{p} already exists; give --force to replace it, or choose another name.")
    return p


def folder_writable(folder: str | Path) -> bool:
    """Can a file be made in this folder? Tried, not guessed: os.access is wrong for root, ACLs and
    read-only mounts. A folder that does not exist yet is judged by its nearest existing parent."""
    import tempfile

    folder = Path(folder)
    where = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if where is None:
        return True
    if not where.is_dir():
        return False
    try:
        fd, name = tempfile.mkstemp(prefix=".phoenix-write-test-", dir=where)
    except OSError:
        return False
    os.close(fd)
    try:
        os.remove(name)
    except OSError:
        pass
    return True


# koboldcpp options Phoenix does not plan but keeps from a user's .kcpps (koboldcpp.md §2.3-2.4), each as the engine
# takes it: --blasthreads N (prompt threads; 0 = --threads), --usemlock, --quiet, --highpriority
ENGINE_OPTIONS = ("blasthreads", "usemlock", "quiet", "highpriority")


def engine_options(value) -> tuple:
    """{name: value} or (name, value) pairs -> sorted pairs of the options that are on; off is the engine's default,
    nothing to keep."""
    items = value.items() if isinstance(value, dict) else value
    out = {}
    try:
        pairs = [tuple(p) for p in items]
    except TypeError:
        raise InputError(f"Engine options must be names with values, not {_show(value)}.") from None
    for pair in pairs:
        if len(pair) != 2 or pair[0] not in ENGINE_OPTIONS:
            raise InputError(f"{_show(pair[0] if pair else pair)} is not an engine option Phoenix keeps "
                             f"({', '.join(ENGINE_OPTIONS)}).")
        name, x = pair
        if name == "blasthreads":
            x = integer(x, "blasthreads", 0, 4096)
        elif not isinstance(x, bool):
            raise InputError(f"{name} must be true or false, not {_show(x)}.")
        if x:
            out[name] = x
    return tuple(sorted(out.items()))


def engine_option_text(name: str, x) -> str:
    """'--blasthreads 8', '--usemlock': as koboldcpp's command line has it."""
    return f"--{name}" if x is True else f"--{name} {x}"
