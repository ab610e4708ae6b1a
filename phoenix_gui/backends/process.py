"""Run a server as a child process: argv lists (never a shell), merged output split on \\r and \\n,
a log file per launch, graceful stop, and no orphans when Phoenix exits or crashes."""

from __future__ import annotations

import atexit
import collections
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Callable

_live: "weakref.WeakSet[ServerProcess]" = weakref.WeakSet()


def _linux_die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; the process-group kill still applies
        pass


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


class ServerProcess:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None, log_path: str | Path | None = None,
                 on_line: Callable[[str], None] | None = None, cwd: str | None = None):
        self.argv = [str(a) for a in argv]
        self.env = env or {}
        self.log_path = Path(log_path) if log_path else None
        self.on_line = on_line
        self.cwd = cwd
        self.lines: collections.deque[str] = collections.deque(maxlen=20000)
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self._reader: threading.Thread | None = None
        self._log = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "ServerProcess":
        """Start the child. On Linux call this from a long-lived thread (the GUI or main thread):
        the kernel kills the child when the thread that started it ends."""
        global _job
        env = {**os.environ, **self.env}
        kw: dict = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.cwd)
        if os.name == "nt":
            kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | 0x08000000  # CREATE_NO_WINDOW
        else:
            kw["start_new_session"] = True  # its own process group, so the whole tree can be stopped
            if sys.platform.startswith("linux"):
                kw["preexec_fn"] = _linux_die_with_parent
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "w", encoding="utf-8", errors="replace")
            self._log.write("$ " + " ".join(self.argv) + "\n")
        self.proc = subprocess.Popen(self.argv, **kw)
        self.started_at = time.monotonic()
        if os.name == "nt":
            try:
                _job = _job or _WindowsJob()
                _job.add(self.proc)
            except Exception:  # noqa: BLE001 - without a job object the atexit stop still runs
                pass
        _live.add(self)
        self._reader = threading.Thread(target=self._read, name="server-output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        buf = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            # progress lines end in \r only; each \r or \n ends a line
            parts = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            buf = parts.pop()
            for p in parts:
                self._emit(p.decode("utf-8", "replace"))
        if buf:
            self._emit(buf.decode("utf-8", "replace"))
        if self._log:
            self._log.flush()

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        if self._log:
            self._log.write(line + "\n")
        if self.on_line:
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

    def tree_pids(self) -> list[int]:
        if not self.proc:
            return []
        try:
            import psutil

            p = psutil.Process(self.proc.pid)
            return [p.pid] + [c.pid for c in p.children(recursive=True)]
        except Exception:  # noqa: BLE001 - already gone
            return []

    def stop(self, timeout: float = 10.0, graceful: Callable[[], None] | None = None) -> int | None:
        """Graceful first (the server's own shutdown, then SIGTERM / CTRL_BREAK), kill after timeout."""
        if not self.proc:
            return None
        pids = self.tree_pids()
        if self.proc.poll() is None and graceful:
            try:
                graceful()
                self.proc.wait(min(timeout, 5.0))
            except Exception:  # noqa: BLE001 - fall through to signals
                pass
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self._signal(signal.SIGKILL if os.name != "nt" else None)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self._kill_leftovers(pids)
        self.wait_output(2)
        if self._log:
            try:
                self._log.close()
            except OSError:
                pass
        _live.discard(self)
        return self.proc.returncode

    def _signal(self, sig) -> None:
        try:
            if os.name == "nt":
                if sig is None:
                    self.proc.kill()
                else:
                    self.proc.send_signal(sig)
            else:
                os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError, OSError):
            pass

    @staticmethod
    def _kill_leftovers(pids: list[int]) -> None:
        try:
            import psutil
        except ImportError:
            return
        for pid in pids:
            try:
                p = psutil.Process(pid)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except Exception:  # noqa: BLE001 - gone already
                pass


@atexit.register
def _stop_all() -> None:
    for sp in list(_live):
        try:
            sp.stop(timeout=3)
        except Exception:  # noqa: BLE001
            pass
