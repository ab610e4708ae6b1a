"""What keeps a server from outliving Phoenix, whatever way Phoenix ends (process.py's docstring tells the
whole scheme): on Linux the child's parent-death signal and Phoenix as a child subreaper, on Windows a job
object that kills its processes when Phoenix's handle closes, on POSIX a watchdog process that stops what a
dead Phoenix left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort; the process-group kill still applies
        pass


_subreaper = None


def become_subreaper() -> bool:
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


def is_subreaper() -> bool:
    """Whether Phoenix became a subreaper (a server was started on Linux): then orphans are its to reap."""
    return bool(_subreaper)


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


def add_to_job(proc: subprocess.Popen) -> None:
    """Windows: put the process into Phoenix's kill-on-close job object (made on first use)."""
    global _job
    _job = _job or _WindowsJob()
    _job.add(proc)

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


def tell_watchdog(msg: str) -> None:
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
