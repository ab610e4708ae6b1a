"""Run a server as a child process: argv lists (never a shell), merged output split on \\r and \\n,
a bounded log file per launch, graceful stop, and no process left behind when Phoenix exits or crashes.

A server may be a launcher whose child does the work (koboldcpp.exe is a PyInstaller bootloader), and
a launcher may exit and leave its child behind. So the whole tree is supervised, not the direct child:
  Windows  every process goes into a job object that kills them all when Phoenix's handle closes.
  POSIX    the server starts a new session (its own process group); its members are recorded while it
           runs; stop() asks, then signals the group, then kills every recorded or session member.
  Linux    the direct child gets PR_SET_PDEATHSIG; Phoenix is a child subreaper, so an orphaned
           grandchild re-parents to Phoenix (found and reaped, not lost to init); and a small watchdog
           process kills the recorded tree when Phoenix dies without cleaning up (SIGKILL, a crash).
  Marker   a daemon can leave the session and process group (setsid) and lose its parent (a double
           fork): then neither the group nor the tree leads to it. Each run puts a random token in the
           server's environment (RUN_MARKER), which descendants inherit; stop() and the watchdog also end
           the processes carrying this run's token, and only those: Phoenix never signals what it did not
           start. Not tracked, then: a descendant that leaves the session, clears its environment and loses
           its parent between two tree samples (SAMPLE_EVERY_S), or one running as another account (its
           environment cannot be read; the watchdog reads /proc, so Linux). A cgroup would hold even those,
           but making one needs a delegated cgroup tree, which a desktop user does not have everywhere.
Output is read incrementally: one line is at most MAX_LINE_CHARS, memory keeps the last lines up to
TAIL_CHARS, and the log file rotates at LOG_MAX_BYTES (one older copy, <log>.1).
"""

from __future__ import annotations

import atexit
import codecs
import collections
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, Iterable

from ...validate import InputError

_live: "weakref.WeakSet[ServerProcess]" = weakref.WeakSet()

MAX_LINE_CHARS = 4096  # a longer line (or MBs without a newline) is cut into pieces of this size
TAIL_LINES = 20000
TAIL_CHARS = 8 << 20  # the in-memory tail for diagnosis and the buffer report
LOG_MAX_BYTES = 20 << 20  # then the log moves to <log>.1 and a new one starts
SAMPLE_EVERY_S = 0.5  # how often the server's process tree is recorded
RUN_MARKER = "PHOENIX_RUN"  # environment variable: a per-run token that the server's descendants inherit
_EOL = re.compile(r"\r\n|\r|\n")  # koboldcpp ends progress lines with \r alone


def _linux_die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; the process-group kill still applies
        pass


_subreaper = None


def _become_subreaper() -> bool:
    """Linux: orphaned descendants re-parent to Phoenix instead of init, so they stay findable."""
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                _subreaper = ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
            except Exception:  # noqa: BLE001 - older kernels; the session sweep still finds them
                _subreaper = False
    return _subreaper


class LogFolderError(InputError):
    """The server's log file cannot be written (a read-only or full data folder): one sentence naming the
    folder. An InputError, not an OSError, so that no caller reports it as the engine failing to start."""


class _WindowsJob:
    """A job object that kills every process in it when Phoenix's handle closes (exit or crash)."""

    def __init__(self):
        import ctypes
        from ctypes import wintypes

        k32 = ctypes.WinDLL("kernel32", use_last_error=True)
        self.k32 = k32
        self.handle = k32.CreateJobObjectW(None, None)

        class BASIC(ctypes.Structure):
            _fields_ = [("PerProcessUserTimeLimit", ctypes.c_int64), ("PerJobUserTimeLimit", ctypes.c_int64),
                        ("LimitFlags", wintypes.DWORD), ("MinimumWorkingSetSize", ctypes.c_size_t),
                        ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", wintypes.DWORD),
                        ("Affinity", ctypes.c_size_t), ("PriorityClass", wintypes.DWORD),
                        ("SchedulingClass", wintypes.DWORD)]

        class IO(ctypes.Structure):
            _fields_ = [(n, ctypes.c_uint64) for n in ("r", "w", "o", "rb", "wb", "ob")]

        class EXTENDED(ctypes.Structure):
            _fields_ = [("BasicLimitInformation", BASIC), ("IoInfo", IO), ("ProcessMemoryLimit", ctypes.c_size_t),
                        ("JobMemoryLimit", ctypes.c_size_t), ("PeakProcessMemoryUsed", ctypes.c_size_t),
                        ("PeakJobMemoryUsed", ctypes.c_size_t)]

        info = EXTENDED()
        info.BasicLimitInformation.LimitFlags = 0x2000  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        k32.SetInformationJobObject(self.handle, 9, ctypes.byref(info), ctypes.sizeof(info))

    def add(self, proc: subprocess.Popen) -> None:
        self.k32.AssignProcessToJobObject(self.handle, int(proc._handle))  # noqa: SLF001


_job = None

# --- the watchdog (POSIX): a separate process that outlives Phoenix by a second ---
# Phoenix writes "+<sid> <RUN_MARKER>=<marker>" when a server session starts and "-<sid>" when it was
# stopped. The watchdog records each session's processes (pid and start time, from /proc) and, when its
# stdin reaches end of file (Phoenix exited or was killed, even by SIGKILL), terminates and then kills what
# is left of them and every process whose environment carries that run's marker (a daemon that left).
# Standard library only, run with -I -S: it starts in milliseconds and imports nothing of Phoenix.
_WATCHDOG = r"""# Phoenix watchdog: stops a server that Phoenix left behind when it died
import os, select, signal, sys, time
for s in (signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
def table():
    t = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return t
    for d in names:
        if d.isdigit():
            try:
                with open("/proc/" + d + "/stat", "rb") as f:
                    r = f.read().rsplit(b")", 1)[1].split()
                t[int(d)] = (int(r[1]), int(r[3]), r[19], r[0])  # ppid, session, start time, state
            except (OSError, IndexError, ValueError):
                pass
    return t
def marked(tag, t):
    m = {}
    for p in t if tag else ():
        try:
            with open("/proc/%d/environ" % p, "rb") as f:
                if tag in f.read().split(b"\0"):
                    m[p] = t[p][2]
        except OSError:
            pass
    return m
def members(sid, t):
    m = {p: v[2] for p, v in t.items() if v[1] == sid}
    grew = True
    while grew:  # and descendants that left the session
        grew = False
        for p, v in t.items():
            if p not in m and v[0] in m:
                m[p] = v[2]
                grew = True
    return m
watched, tags, buf = {}, {}, b""
while True:
    r, _, _ = select.select([0], [], [], 0.5 if watched else None)
    if r:
        data = os.read(0, 4096)
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            words = line[1:].split()
            sid = int(words[0])
            if line[:1] == b"+":
                watched[sid] = {}
                tags[sid] = words[1] if len(words) > 1 else b""
            else:
                watched.pop(sid, None)
                tags.pop(sid, None)
    if watched:
        t = table()
        for sid, seen in watched.items():
            seen.update(members(sid, t))
def sweep(sig):
    t, left = table(), 0
    for sid, seen in watched.items():
        ours = sid not in t or seen.get(sid, t[sid][2]) == t[sid][2]  # else the leader's pid was reused
        if ours:
            try:
                os.killpg(sid, sig)
            except OSError:
                pass
        for p, st in {**seen, **(members(sid, t) if ours else {}), **marked(tags.get(sid), t)}.items():
            if p in t and t[p][2] == st and t[p][3] != b"Z":
                left += 1
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
    return left
if watched and sweep(signal.SIGTERM):
    end = time.monotonic() + 2
    while time.monotonic() < end and sweep(0):
        time.sleep(0.05)
    sweep(signal.SIGKILL)
"""
_watchdog: subprocess.Popen | None = None
_watchdog_lock = threading.Lock()


def _tell_watchdog(msg: str) -> None:
    global _watchdog
    if os.name == "nt" or getattr(sys, "frozen", False):  # Windows: the job object; frozen: no Python to run it
        return
    with _watchdog_lock:
        try:
            if _watchdog is None or _watchdog.poll() is not None:
                if msg.startswith("-"):
                    return
                _watchdog = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHDOG], stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True)  # out of reach of the terminal's Ctrl-C
            _watchdog.stdin.write((msg + "\n").encode())
            _watchdog.stdin.flush()
        except (OSError, ValueError):  # no watchdog: PDEATHSIG and the stop() sweep still apply
            pass


def watchdog_pid() -> int | None:
    return _watchdog.pid if _watchdog is not None and _watchdog.poll() is None else None


# --- output ---

class LineSplitter:
    """Bytes in, lines out, incrementally: only the unfinished tail is kept between reads (so output
    without newlines costs linear time), \r, \n and \r\n each end a line (also when a \r\n is cut
    between two reads), a line is at most max_chars (longer ones come out in pieces), and UTF-8 cut
    between reads is decoded whole."""

    def __init__(self, max_chars: int = MAX_LINE_CHARS):
        self.max_chars = max_chars
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._tail = ""
        self._after_cr = False

    def feed(self, data: bytes) -> list[str]:
        return self._split(self._decoder.decode(data))

    def close(self) -> list[str]:
        out = self._split(self._decoder.decode(b"", final=True))
        if self._tail:
            out.append(self._tail)
            self._tail = ""
        return out

    def _split(self, text: str) -> list[str]:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the \n of a \r\n whose \r ended the previous read
        if not text:
            return []
        self._after_cr = text.endswith("\r")
        parts = _EOL.split(self._tail + text)
        self._tail = parts.pop()
        out: list[str] = []
        for part in parts:
            out.extend(self._cut(part))
        if len(self._tail) > self.max_chars:
            pieces = self._cut(self._tail)
            self._tail = pieces.pop()
            out.extend(pieces)
        return out

    def _cut(self, line: str) -> list[str]:
        n = self.max_chars
        return [line[i:i + n] for i in range(0, len(line), n)] or [""]


class RotatingLog:
    """A log file that never grows past max_bytes: then it becomes <name>.1 (replacing an older one)
    and a new file starts with the command line and a pointer to the older part."""

    def __init__(self, path: Path, header: str, max_bytes: int = LOG_MAX_BYTES):
        self.path, self.header, self.max_bytes = path, header, max_bytes
        self.rotations = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "wb")
        self._size = 0
        try:
            self._put(header.encode("utf-8", "replace"))
        except OSError:  # a full disk: no open file left behind
            self._f.close()
            raise

    def write_lines(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        if self._size + len(data) > self.max_bytes and self._size > len(self.header):
            self._rotate()
        self._put(data)

    def _put(self, data: bytes) -> None:
        self._f.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        self._f.close()
        older = self.path.with_name(self.path.name + ".1")
        os.replace(self.path, older)
        self.rotations += 1
        self._f = open(self.path, "wb")
        self._size = 0
        self._put((self.header + f"(continued: the output before this is in {older.name})\n").encode("utf-8", "replace"))

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class ServerProcess:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None, log_path: str | Path | None = None,
                 on_line: Callable[[str], None] | None = None, cwd: str | None = None,
                 log_max_bytes: int = LOG_MAX_BYTES):
        self.argv = [str(a) for a in argv]
        self.env = env or {}
        self.log_path = Path(log_path) if log_path else None
        self.log_max_bytes = log_max_bytes
        self.on_line = on_line
        self.cwd = cwd
        self.lines: collections.deque[str] = collections.deque()  # the last lines (TAIL_LINES, TAIL_CHARS)
        self._tail_chars = 0
        self.bytes_read = 0
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self._reader: threading.Thread | None = None
        self._sampler: threading.Thread | None = None
        self._stopping = threading.Event()
        self._seen: set = set()  # psutil.Process of every process of the tree seen while it ran
        self._root = None  # psutil.Process of the direct child: its start time tells it from a reused pid
        self._seen_lock = threading.Lock()
        self._log: RotatingLog | None = None
        self.marker = f"{os.getpid()}-{secrets.token_hex(8)}"  # this run's RUN_MARKER (see the module docstring)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ServerProcess":
        """Start the child. On Linux call this from a long-lived thread (the GUI or main thread):
        the kernel kills the child when the thread that started it ends."""
        global _job
        env = {**os.environ, **self.env, RUN_MARKER: self.marker}
        kw: dict = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.cwd)
        if os.name == "nt":
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | 0x08000000  # CREATE_NO_WINDOW
        else:
            kw["start_new_session"] = True  # its own session and process group, so the whole tree can be found
            if sys.platform.startswith("linux"):
                kw["preexec_fn"] = _linux_die_with_parent
                _become_subreaper()
        if self.log_path:
            try:
                self._log = RotatingLog(self.log_path, "$ " + " ".join(self.argv) + "\n", self.log_max_bytes)
            except OSError as e:  # Phoenix's own folder, not the engine: say so, and name no log that is not there
                raise LogFolderError(f"Phoenix cannot write its log folder {self.log_path.parent} "
                                     f"({e.strerror or e}), so the engine was not started.") from None
        self.proc = subprocess.Popen(self.argv, **kw)
        self.started_at = time.monotonic()
        if os.name == "nt":
            try:
                _job = _job or _WindowsJob()
                _job.add(self.proc)
            except Exception:  # noqa: BLE001 - without a job object the atexit stop still runs
                pass
        else:
            _tell_watchdog(f"+{self.proc.pid} {RUN_MARKER}={self.marker}")
        _live.add(self)
        self._adopt(self.proc)
        self._reader = threading.Thread(target=self._read, name="server-output", daemon=True)
        self._reader.start()
        self._sampler = threading.Thread(target=self._sample, name="server-tree", daemon=True)
        self._sampler.start()
        return self

    # --- output ---
    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        splitter = LineSplitter()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            self.bytes_read += len(chunk)
            self._emit(splitter.feed(chunk))
        self._emit(splitter.close())
        if self._log:
            with contextlib.suppress(OSError, ValueError):
                self._log.flush()

    def _emit(self, lines: list[str]) -> None:
        if not lines:
            return
        tail = self.lines
        for line in lines:
            tail.append(line)
            self._tail_chars += len(line)
        while len(tail) > TAIL_LINES or (self._tail_chars > TAIL_CHARS and len(tail) > 1):
            self._tail_chars -= len(tail.popleft())
        if self._log:
            try:
                self._log.write_lines(lines)
            except (OSError, ValueError):  # a full disk or a closed log must not stop the reading
                self._log = None
        if self.on_line:
            for line in lines:
                try:
                    self.on_line(line)
                except Exception:  # noqa: BLE001 - a display callback must not kill the reader
                    pass

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def wait_output(self, timeout: float = 5.0) -> None:
        """Wait until every line the process printed has been read (after it exited)."""
        if self._reader:
            self._reader.join(timeout)

    # --- the process tree ---
    def _adopt(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.proc = proc
        found = _descendants(proc.pid)
        self._root = found[0] if found else None
        self._record()
        return proc

    def _kill_tree(self) -> None:
        if self._members():
            self._signal_tree(signal.SIGKILL if os.name != "nt" else None)
            self._wait_gone(5.0)

    def _sample(self) -> None:
        """Record the tree while any of it runs (an orphaned grandchild outlives the direct child)."""
        while not self._stopping.wait(SAMPLE_EVERY_S):
            self._record()
            self._reap_orphans()
            if self.proc.poll() is not None and not self._members():
                return

    def _record(self) -> None:
        """Remember every process of the tree now: the direct child's descendants, and (POSIX) whatever
        else is in its session, such as a grandchild whose parent exited."""
        found = []
        root = self._root
        if root is not None and _alive(root):  # is_running() compares start times: never a reused pid
            found = _descendants(root.pid)
        if self._session_is_ours():
            found += _session_members(self.proc.pid, children_of_phoenix_only=True)
        with self._seen_lock:
            self._seen.update(found)

    def _session_is_ours(self) -> bool:
        """POSIX: the session id is the direct child's pid. Once that pid is free again another program
        may own it (and a session of that id): then only the recorded processes are the server's."""
        if os.name == "nt" or not self.proc:
            return False
        if self.proc.returncode is None or self._root is None:
            return True
        try:
            import psutil

            return psutil.Process(self.proc.pid).create_time() == self._root.create_time()
        except Exception:  # noqa: BLE001 - no process has that pid: the session (if any) is what is left of ours
            return True

    def _members(self) -> list:
        """The tree's processes still alive (not zombies): recorded ones and the session's."""
        self._record()
        with self._seen_lock:
            procs = set(self._seen)
        if self._session_is_ours():
            procs.update(_session_members(self.proc.pid))
        marked = _marked(self.marker)  # those that left the session and the tree (setsid, double fork)
        with self._seen_lock:
            self._seen.update(marked)  # so that a zombie re-parented to Phoenix is reaped
        procs.update(marked)
        return [p for p in procs if _alive(p)]

    def tree_pids(self) -> list[int]:
        """The direct child and every process of its tree alive now."""
        if not self.proc:
            return []
        return sorted({p.pid for p in self._members()} | ({self.proc.pid} if self.proc.poll() is None else set()))

    def _reap_orphans(self) -> None:
        """Zombies that re-parented to Phoenix (the subreaper) are ours to collect; the direct child is
        left to Popen, which needs its exit status."""
        if not _subreaper or not self.proc:
            return
        with self._seen_lock:
            procs = list(self._seen)
        me = os.getpid()
        for p in procs:
            try:
                import psutil

                if (p.pid != self.proc.pid and p.is_running() and p.status() == psutil.STATUS_ZOMBIE
                        and p.ppid() == me):
                    os.waitpid(p.pid, os.WNOHANG)
            except Exception:  # noqa: BLE001 - gone, or collected already
                pass

    def stop(self, timeout: float = 10.0, graceful: Callable[[], None] | None = None) -> int | None:
        """Graceful first (the server's own shutdown), then SIGTERM to the whole group (CTRL_BREAK on
        Windows), then SIGKILL to the group and to every process of the tree that was seen, also when
        the direct child has already exited and left a grandchild behind."""
        if not self.proc:
            return None
        self._record()
        if self.proc.poll() is None and graceful:
            try:
                graceful()
                self.proc.wait(min(timeout, 5.0))
            except Exception:  # noqa: BLE001 - fall through to signals
                pass
        if self._wait_gone(0.2):
            pass
        else:
            self._signal_tree(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
            if not self._wait_gone(timeout):
                self._signal_tree(signal.SIGKILL if os.name != "nt" else None)
                self._wait_gone(5.0)
        self._stopping.set()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(1.0)
        self._reap_orphans()
        self.wait_output(2)
        if self._log:
            with contextlib.suppress(OSError, ValueError):
                self._log.close()
        if os.name != "nt":
            _tell_watchdog(f"-{self.proc.pid}")
        _live.discard(self)
        return self.proc.returncode

    def terminate(self) -> None:
        """Ask the whole tree to stop now, without waiting: safe from the output reader's own thread (an
        on_line callback), where stop() would wait for that thread. stop() follows and collects it."""
        if self.proc is not None and self.proc.poll() is None:
            self._signal_tree(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)

    def _wait_gone(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while True:
            self.proc.poll()  # collects the direct child
            self._reap_orphans()
            if self.proc.returncode is not None and not self._members():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)

    def _signal_tree(self, sig) -> None:
        if os.name == "nt":
            if self.proc.poll() is None:
                with contextlib.suppress(OSError):
                    self.proc.kill() if sig is None else self.proc.send_signal(sig)
            if sig is None:
                for p in self._members():
                    with contextlib.suppress(Exception):
                        p.kill()
            return
        if self._session_is_ours():
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, sig)  # the group outlives its leader while any member is left
        for p in self._members():
            with contextlib.suppress(Exception):  # psutil checks the start time: never a reused pid
                p.send_signal(sig)


def _alive(p) -> bool:
    try:
        import psutil

        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001 - gone
        return False


def _descendants(pid: int) -> list:
    try:
        import psutil

        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except Exception:  # noqa: BLE001 - gone already, or psutil missing
        return []


def _session_members(sid: int, children_of_phoenix_only: bool = False) -> list:
    """Processes in session `sid` (and their descendants). children_of_phoenix_only: just those
    re-parented to Phoenix (the subreaper case), a cheap check made every sample."""
    try:
        import psutil

        cands = psutil.Process().children() if children_of_phoenix_only else list(psutil.process_iter())
    except Exception:  # noqa: BLE001
        return []
    out = []
    for p in cands:
        try:
            if os.getsid(p.pid) == sid:
                out.append(p)
                out.extend(p.children(recursive=True))
        except Exception:  # noqa: BLE001 - gone, or another user's
            pass
    return out


def _marked(marker: str) -> list:
    """Other processes whose environment carries this run's marker: those this account may read (POSIX;
    Windows has the job object). The marker is random per run, so none of them was started by anyone else."""
    if os.name == "nt":
        return []
    try:
        import psutil
    except ImportError:
        return []
    tag = f"{RUN_MARKER}={marker}".encode()
    if os.path.isdir("/proc"):  # raw reads: a tenth of psutil's cost, and this runs while stop() waits
        found = [int(d) for d in os.listdir("/proc") if d.isdigit() and tag in _environ(d)]
    else:
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(Exception):  # gone, a zombie, or another account's
                if p.environ().get(RUN_MARKER) == marker:
                    found.append(p.pid)
    out = []
    for pid in found:
        with contextlib.suppress(Exception):
            if pid != os.getpid():
                out.append(psutil.Process(pid))  # remembers the start time: never a reused pid later
    return out


def _environ(pid: str) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def run_briefly(argv: list[str], timeout: float = 30.0) -> str:
    """Run a short command (e.g. `exe --version`) and return its output. On timeout the whole tree is
    killed: subprocess.run kills only the direct child and then waits for a pipe that a grandchild
    (a launcher's real program) still holds, which never ends. Raises OSError or TimeoutError."""
    kw: dict = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if os.name == "nt":
        kw["creationflags"] = 0x08000000  # CREATE_NO_WINDOW
    else:
        kw["start_new_session"] = True
    tree = ServerProcess(argv)  # for its tree handling only
    kw["env"] = {**os.environ, RUN_MARKER: tree.marker}
    proc = tree._adopt(subprocess.Popen(tree.argv, **kw))
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree._kill_tree()
        proc.stdout.close()
        raise TimeoutError(f"{Path(tree.argv[0]).name} did not answer within {timeout:g} s") from None
    tree._kill_tree()  # a launcher's child may outlive the answer
    return out.decode("utf-8", "replace")


def engine_version(engine, exe: str, timeout: float = 30.0) -> str:
    """What `exe --version` says, as the engine (engines/base.Engine) reads it; "unknown (why)" when the
    program cannot be run or does not answer in time. Here, not in the engine: running a program is this
    layer's (the engines sit below it)."""
    try:
        out = run_briefly(engine.version_argv(exe), timeout)
    except (OSError, ValueError, TimeoutError) as e:
        return f"unknown ({e})"
    return engine.parse_version(out)


def stop_on_signals(signals: Iterable[str] = ("SIGTERM", "SIGHUP")):
    """For a command-line run in the main thread: SIGTERM and SIGHUP (a closed terminal) raise
    KeyboardInterrupt like Ctrl-C, so the caller's cleanup stops the server instead of the process
    dying with it running. A second signal while stopping is ignored."""
    return _SignalsToInterrupt(signals)


class _SignalsToInterrupt:
    def __init__(self, names: Iterable[str]):
        self.names = list(names)
        self.old: dict = {}
        self.received: list[int] = []

    def _handler(self, signum, frame):
        if self.received:
            return
        self.received.append(signum)
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in self.names:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self.old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)
        return False


@atexit.register
def _stop_all() -> None:
    for sp in list(_live):
        try:
            sp.stop(timeout=3)
        except Exception:  # noqa: BLE001
            pass
