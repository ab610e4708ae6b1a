"""A server that double-forks a daemon into its own session leaves nothing behind (issue 24, item 14).

The daemon leaves the server's session and process group (setsid) and its parent exits, so neither the
group nor the process tree leads to it. Real processes throughout: a small script that daemonizes a
sleeper stands in for a misbehaving server, in front of tests/fake_koboldcpp.py where an engine is needed.
And Phoenix never signals a process it did not start."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.processes.process import ServerProcess
from phoenix_gui.hardware import demo_rig_path
from phoenix_gui.model import write_skeleton
from machine_helpers import gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, setsid and /proc: Linux")

ROOT = str(Path(__file__).resolve().parents[1])
SERVER = str(Path(__file__).with_name("daemonizing_server.py"))  # daemonizes a sleeper, then serves


def daemon_pids(pidfile: Path, timeout: float = 20.0) -> list[int]:
    """The pids the daemons wrote (one line each), once there is one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        lines = pidfile.read_text().split() if pidfile.exists() else []
        if lines:
            return [int(x) for x in lines]
        time.sleep(0.05)
    raise AssertionError("the daemon never started")


def daemon_pid(pidfile: Path, timeout: float = 20.0) -> int:
    return daemon_pids(pidfile, timeout)[0]


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@pytest.mark.parametrize("server", ["keeps running", "exits at once"])
def test_stop_ends_a_daemon_that_left_the_session(tmp_path, monkeypatch, server):
    pidfile = tmp_path / "daemon.pid"
    monkeypatch.setenv("DAEMON_PIDFILE", str(pidfile))
    argv = [sys.executable, SERVER, "--then"]
    if server == "keeps running":
        argv += ["-c", "import time; time.sleep(300)"]
    sp = ServerProcess(argv).start()
    pid = daemon_pid(pidfile)
    try:
        assert os.getsid(pid) != sp.pid  # out of the server's session: the shape under test
        if server == "exits at once":
            sp.proc.wait(10)
        assert pid in sp.tree_pids()
        sp.stop(timeout=3)
        assert gone([pid], timeout=5), "the daemon outlived stop()"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).ppid() != os.getpid()  # reaped, no zombie
    finally:
        _kill(pid)


def test_only_this_runs_daemon_is_stopped(tmp_path, monkeypatch):
    """Two runs, each with a daemon, and a sleeper the test started itself (its own session, and even a
    marker-like variable of its own): stopping one run ends its daemon and nothing else."""
    from phoenix_gui.backends.processes.process import RUN_MARKER

    runs, pids = [], []
    for k in range(2):
        monkeypatch.setenv("DAEMON_PIDFILE", str(tmp_path / f"d{k}.pid"))
        runs.append(ServerProcess([sys.executable, SERVER, "--then", "-c", "import time; time.sleep(300)"]).start())
        pids.append(daemon_pid(tmp_path / f"d{k}.pid"))
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True,
                                env={**os.environ, RUN_MARKER: "someone-else"})
    try:
        runs[0].stop(timeout=3)
        assert gone([pids[0]], timeout=5)
        time.sleep(0.5)
        assert psutil.Process(pids[1]).status() != psutil.STATUS_ZOMBIE, "another run's daemon was killed"
        assert stranger.poll() is None, "a process Phoenix did not start was killed"
        assert runs[1].poll() is None
    finally:
        runs[1].stop(timeout=3)
        stranger.kill()
        stranger.wait()
        for p in pids:
            _kill(p)
    assert gone([pids[1]], timeout=5)


def _env(tmp_path, pidfile):
    return {**os.environ, "PHOENIX_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": ROOT,
            "DAEMON_PIDFILE": str(pidfile)}


def test_phoenix_bench_leaves_no_daemon(tmp_path):
    tiny = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf")
    pidfile = tmp_path / "bench-daemon.pid"
    r = subprocess.run([sys.executable, "-m", "phoenix_gui", "bench", str(tiny), "--rig", str(demo_rig_path()),
                        "--exe", SERVER, "--ctx", "2048", "--split", "1", "1", "1",
                        "--port", str(free_port()), "--prompt-tokens", "16", "--gen-tokens", "4"],
                       capture_output=True, text=True, timeout=180, env=_env(tmp_path, pidfile))
    pid = daemon_pid(pidfile, timeout=1)
    try:
        assert r.returncode == 0, r.stderr
        assert gone([pid], timeout=5), "phoenix bench left the server's daemon running"
    finally:
        _kill(pid)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_phoenix_launch_leaves_no_daemon(tmp_path, sig):
    """Stopped with SIGTERM (stop() sweeps), or killed with SIGKILL (the watchdog sweeps)."""
    tiny = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf")
    pidfile = tmp_path / "launch-daemon.pid"
    p = subprocess.Popen([sys.executable, "-m", "phoenix_gui", "launch", str(tiny), "--rig", str(demo_rig_path()),
                          "--exe", SERVER, "--ctx", "2048", "--split", "1", "1", "1",
                          "--port", str(free_port())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=_env(tmp_path, pidfile))
    pid = None
    try:
        err = []
        for line in p.stderr:
            err.append(line)
            if "ready in" in line:
                break
        assert any("ready in" in e for e in err), "".join(err)
        pid = daemon_pid(pidfile)
        time.sleep(0.6)  # one watchdog sample
        p.send_signal(sig)
        p.wait(30)
        assert gone([pid], timeout=10), f"the server's daemon survived {sig.name} of phoenix launch"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if pid:
            _kill(pid)


def test_phoenix_tune_leaves_no_daemon(tmp_path):
    """A tune starts the engine once per run: every run's daemon is gone when it ends."""
    tiny = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf")
    pidfile = tmp_path / "tune-daemons.pid"
    subprocess.run([sys.executable, "-m", "phoenix_gui", "tune", str(tiny), "--json", "--rig", str(demo_rig_path()),
                    "--exe", SERVER, "--ctx", "2048", "--budget-s", "30", "--max-runs", "2", "--repeats", "1",
                    "--prompt-tokens", "16", "--gen-tokens", "4"],
                   capture_output=True, text=True, timeout=300, env=_env(tmp_path, pidfile))
    pids = daemon_pids(pidfile, timeout=1)
    try:
        assert gone(pids, timeout=5), "phoenix tune left a run's daemon running"
    finally:
        for pid in pids:
            _kill(pid)
