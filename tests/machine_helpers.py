"""Driving a launch the way the CLI and the wizard do, and waiting for processes to be gone."""

import time
from contextlib import contextmanager

import psutil

from phoenix_gui.backends.lifecycle import State
from phoenix_gui.backends.processes.states import wait_while
from phoenix_gui.backends.tune import TuneState


def drive(m, until=lambda m: m.state is not State.LOADING, timeout=60.0):
    """Poll the machine until the condition holds."""
    end = time.monotonic() + timeout
    while not until(m):
        assert time.monotonic() < end, f"still {m.state.value}"
        m.poll()
        time.sleep(0.05)
    return m


@contextmanager
def ready(m, timeout=180.0):
    """Start a LaunchMachine and drive it to READY; the body gets its Launch. On the way out (a failed assertion
    included) the machine is stopped, and a normal exit checks it reached STOPPED and left no process behind."""
    m.start()
    pid = m.launch.process.pid
    try:
        drive(m, timeout=timeout)
        assert m.state is State.READY, m.failure
        yield m.launch
    finally:
        m.stop()
    assert m.state is State.STOPPED
    assert gone([pid]), "the server is still running"


def gone(pids, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def run_tuner(t, timeout=180.0):
    """Start a Tuner and poll it to the end (as the CLI does), failing the test past `timeout` seconds."""
    t.start()
    assert wait_while(t, {TuneState.RUNNING}, every=0.02, timeout=timeout) is not TuneState.RUNNING, t.message
    return t
