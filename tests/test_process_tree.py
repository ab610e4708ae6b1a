"""No server is left running, whatever its process tree looks like and however Phoenix ends.

Two real shapes: a launcher that starts the server and waits for it (koboldcpp.exe is a PyInstaller
bootloader whose child holds the GPU), and a launcher that starts a child and exits at once (the child
is orphaned). Phoenix ends by stop(), by SIGTERM or SIGHUP to `phoenix launch`, or by SIGKILL."""

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

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX process groups; Windows uses the job object")

ROOT = str(Path(__file__).resolve().parents[1])
FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))

# koboldcpp.exe's shape: start the real program with our arguments, wait, pass its exit status on.
# It forwards no signal (the worst case: SIGTERM to it alone would leave the server running).
LAUNCHER = f"""import subprocess, sys
child = subprocess.Popen([sys.executable, {FAKE!r}] + sys.argv[1:])
print("launched", child.pid, flush=True)
sys.exit(child.wait())
"""
# a parent that starts a long-running child and exits at once: the child is orphaned
ORPHANER = """import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; print('orphan alive', flush=True); time.sleep(300)"])
print("orphan", child.pid, flush=True)
"""
# a launcher that ignores SIGTERM, with a child that ignores it too: only SIGKILL ends them
STUBBORN = """import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
print("stubborn", child.pid, flush=True)
child.wait()
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    d = tmp_path_factory.mktemp("launchers")
    out = {}
    for name, text in (("launcher", LAUNCHER), ("orphaner", ORPHANER), ("stubborn", STUBBORN)):
        (d / f"{name}.py").write_text(text)
        out[name] = str(d / f"{name}.py")
    out["model"] = str(write_skeleton("tiny-llama-f16", d / "tiny.gguf", random_data=True))
    return out


def wait_line(sp, prefix, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in list(sp.lines):
            if line.startswith(prefix):
                return line
        time.sleep(0.05)
    raise AssertionError(f"no line {prefix!r} in {list(sp.lines)[-10:]}")


def test_launcher_shape_the_whole_tree_is_recorded_and_stopped(scripts):
    port = free_port()
    sp = ServerProcess([sys.executable, scripts["launcher"], "--model", scripts["model"], "--port", str(port),
                        "--host", "127.0.0.1"]).start()
    server = int(wait_line(sp, "launched").split()[1])
    wait_line(sp, "Please connect")
    assert server in sp.tree_pids() and sp.pid in sp.tree_pids()
    t0 = time.monotonic()
    sp.stop(timeout=5)
    assert gone([sp.pid, server], timeout=5), "the server behind the launcher survived stop()"
    assert time.monotonic() - t0 < 8


def test_orphaned_grandchild_is_found_and_stopped(scripts):
    """The direct child exits at once; its child lives on. Old behaviour: nothing signalled it."""
    sp = ServerProcess([sys.executable, scripts["orphaner"]]).start()
    orphan = int(wait_line(sp, "orphan ").split()[1])
    wait_line(sp, "orphan alive")
    sp.proc.wait(10)
    assert psutil.pid_exists(orphan)
    if sys.platform.startswith("linux"):
        # Phoenix is a child subreaper: the orphan is re-parented to Phoenix, not lost to init
        assert psutil.Process(orphan).ppid() == os.getpid()
    assert orphan in sp.tree_pids()
    sp.stop(timeout=5)
    assert gone([orphan], timeout=5), "the orphaned grandchild survived stop()"
    assert not (psutil.pid_exists(orphan) and psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE)  # reaped


def test_a_tree_that_ignores_sigterm_is_killed_within_the_timeout(scripts):
    sp = ServerProcess([sys.executable, scripts["stubborn"]]).start()
    child = int(wait_line(sp, "stubborn").split()[1])
    time.sleep(0.3)  # the child has set its handler
    t0 = time.monotonic()
    sp.stop(timeout=1.5)
    assert gone([sp.pid, child], timeout=5)
    assert time.monotonic() - t0 < 6
    assert sp.proc.returncode == -signal.SIGKILL


PHOENIX_LIKE = """import sys, time
sys.path.insert(0, {root!r})
from phoenix_gui.backends.processes.guard import watchdog_pid
from phoenix_gui.backends.processes.process import ServerProcess
sp = ServerProcess({argv!r}).start()
print(sp.pid, watchdog_pid(), flush=True)
time.sleep(300)
"""


def descendants(pid):
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.parametrize("shape", ["launcher", "orphaner"])
def test_nothing_survives_sigkill_of_phoenix(scripts, tmp_path, shape):
    """Phoenix dies by SIGKILL (no cleanup code runs): the launcher gets PR_SET_PDEATHSIG, and the
    watchdog kills what the launcher left (its server, or an orphan), then exits itself."""
    argv = [sys.executable, scripts[shape]]
    if shape == "launcher":
        argv += ["--model", scripts["model"], "--port", str(free_port()), "--host", "127.0.0.1"]
    script = tmp_path / "phoenix_like.py"
    script.write_text(PHOENIX_LIKE.format(root=ROOT, argv=argv))
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child, dog = map(int, p.stdout.readline().split())
        end = time.monotonic() + 30
        want = 3 if shape == "launcher" else 2  # watchdog + launcher + server, or watchdog + orphan
        while len(descendants(p.pid)) < want and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(1.0)  # at least one watchdog sample of the tree
        tree = descendants(p.pid)
        assert dog in tree and len(tree) >= want, tree
    finally:
        p.kill()
        p.wait()
    assert gone(tree, timeout=10), [psutil.Process(x).cmdline() for x in tree if psutil.pid_exists(x)]


def _phoenix_launch(scripts, tmp_path, port):
    env = {**os.environ, "PHOENIX_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "phoenix_gui", "launch", scripts["model"], "--rig", str(demo_rig_path()),
                             "--exe", scripts["launcher"], "--ctx", "2048", "--split", "1", "1", "1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_ready(p, timeout=90):
    end = time.monotonic() + timeout
    err = []
    while time.monotonic() < end:
        line = p.stderr.readline()
        if not line:
            break
        err.append(line)
        if "ready in" in line:
            return
    p.kill()
    raise AssertionError("phoenix launch did not become ready: " + "".join(err))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_phoenix_launch_stops_the_server_behind_a_launcher_on_a_signal(scripts, tmp_path, sig):
    port = free_port()
    p = _phoenix_launch(scripts, tmp_path, port)
    try:
        _wait_ready(p)
        time.sleep(0.6)  # one sample of the tree by the watchdog
        tree = descendants(p.pid)
        assert len(tree) >= 3, tree  # launcher, server, watchdog
        p.send_signal(sig)
        code = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    assert gone(tree, timeout=10), f"left running after {sig.name}"
    if sig is not signal.SIGKILL:
        assert code == 0
        assert "stopping the server" in p.stderr.read()
    from phoenix_gui.backends.processes.ports import port_free

    assert port_free("127.0.0.1", port)


def test_watchdog_lets_a_stopped_server_go_and_stays_quiet(scripts):
    """A server stopped by Phoenix is forgotten by the watchdog; the watchdog itself stays for the next."""
    from phoenix_gui.backends.processes.guard import watchdog_pid

    sp = ServerProcess([sys.executable, "-c", "import time; time.sleep(300)"]).start()
    dog = watchdog_pid()
    assert dog and psutil.Process(dog).ppid() == os.getpid()
    sp.stop(timeout=3)
    assert sp.poll() is not None and watchdog_pid() == dog


def test_stop_reports_the_exit_status_and_keeps_the_output(scripts):
    sp = ServerProcess([sys.executable, "-c", "print('hello'); print('bye', end='')"]).start()
    sp.proc.wait(10)
    sp.wait_output()
    assert sp.stop() == 0 and list(sp.lines) == ["hello", "bye"]


def test_version_of_a_launcher_that_hangs_returns_and_leaves_nothing(tmp_path):
    """`exe --version` through a launcher whose child keeps the output pipe open and never answers:
    subprocess.run's timeout would wait for that pipe forever."""
    from phoenix_gui.backends.processes.process import engine_version
    from phoenix_gui.engines.koboldcpp.server import KoboldCpp

    exe = tmp_path / "koboldcpp.py"
    pidfile = tmp_path / "child.pid"
    exe.write_text("import subprocess, sys, time\n"
                   "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
                   f"open({str(pidfile)!r}, 'w').write(str(c.pid))\ntime.sleep(300)\n")
    t0 = time.monotonic()
    v = engine_version(KoboldCpp(), str(exe), timeout=2)
    assert time.monotonic() - t0 < 10 and v.startswith("unknown (") and "2 s" in v
    assert gone([int(pidfile.read_text())], timeout=5), "the launcher's child was left running"


def test_version_of_the_real_llama_server():
    from phoenix_gui.backends.processes.process import engine_version
    from phoenix_gui.engines.llama_server.server import LlamaServer

    b = LlamaServer()
    v = engine_version(b, b.find())
    assert v[0].isdigit(), v


def test_terminate_from_the_output_reader_ends_the_whole_tree_without_waiting():
    """launch.py stops an engine from its own output callback (a node vanished): terminate() signals the
    whole tree and returns at once, where stop() would wait for the very thread it runs on."""
    tree = """import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("child", child.pid, flush=True)
time.sleep(300)
"""
    said = []

    def on_line(line):
        said.append(line)
        if line.startswith("child"):
            t0 = time.monotonic()
            sp.terminate()
            said.append(time.monotonic() - t0)

    sp = ServerProcess([sys.executable, "-c", tree], on_line=on_line)
    sp.start()
    try:
        end = time.monotonic() + 20
        while sp.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        child = int(said[0].split()[1])
        assert sp.poll() == -signal.SIGTERM and said[1] < 1.0, said
        assert gone([child])  # the group got the signal, not the direct child alone
    finally:
        sp.stop()
