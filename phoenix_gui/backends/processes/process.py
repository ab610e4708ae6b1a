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
The guards live in guard.py. Output is read incrementally (output.py): one line is at most MAX_LINE_CHARS,
memory keeps the last lines up to TAIL_CHARS, and the log file rotates at LOG_MAX_BYTES (one older copy,
<log>.1).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
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
from .guard import add_to_job, become_subreaper, die_with_parent, is_subreaper, tell_watchdog
from .output import LOG_MAX_BYTES, LineSplitter, RotatingLog

_live: "weakref.WeakSet[ServerProcess]" = weakref.WeakSet()

TAIL_LINES = 20000
TAIL_CHARS = 8 << 20  # the in-memory tail for diagnosis and the buffer report
SAMPLE_EVERY_S = 0.5  # how often the server's process tree is recorded
RUN_MARKER = "PHOENIX_RUN"  # environment variable: a per-run token that the server's descendants inherit


class LogFolderError(InputError):
    """The server's log file cannot be written (a read-only or full data folder): one sentence naming the
    folder. An InputError, not an OSError, so that no caller reports it as the engine failing to start."""


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
        env = {**os.environ, **self.env, RUN_MARKER: self.marker}
        kw: dict = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.cwd)
        if os.name == "nt":
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | 0x08000000  # CREATE_NO_WINDOW
        else:
            kw["start_new_session"] = True  # its own session and process group, so the whole tree can be found
            if sys.platform.startswith("linux"):
                kw["preexec_fn"] = die_with_parent
                become_subreaper()
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
                add_to_job(self.proc)
            except Exception:  # noqa: BLE001 - without a job object the atexit stop still runs
                pass
        else:
            tell_watchdog(f"+{self.proc.pid} {RUN_MARKER}={self.marker}")
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
        if not is_subreaper() or not self.proc:
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
            tell_watchdog(f"-{self.proc.pid}")
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
