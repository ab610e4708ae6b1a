"""The explicit lifecycles on processes/states.Machine: wait_while (the command line's one wait), the share
host's states (start fails into failed, an engine that stops by itself is noticed, stop ends in stopped)
and the tuner's state graph."""

from __future__ import annotations

import enum
import stat
import time

import psutil
import pytest
from machine_helpers import gone

from phoenix_gui.backends.processes.states import IllegalTransition, Machine, wait_while
from phoenix_gui.backends.share import ShareError, ShareHost, ShareState
from phoenix_gui.backends.tune import Tuner, TuneState


class Light(str, enum.Enum):
    RED = "red"
    GREEN = "green"
    OFF = "off"


class Lamp(Machine):
    """Goes green after `red_polls` polls."""

    ALLOWED = {Light.RED: {Light.GREEN}, Light.GREEN: {Light.OFF}, Light.OFF: set()}

    def __init__(self, red_polls: int):
        super().__init__(Light.RED)
        self.polls, self.red_polls = 0, red_polls

    def poll(self):
        self.polls += 1
        if self.state is Light.RED and self.polls >= self.red_polls:
            self._to(Light.GREEN, message="go")
        return self.state


def test_wait_while_polls_until_the_state_leaves_the_set():
    lamp = Lamp(3)
    heard = []
    lamp.on_transition(lambda old, new, info: heard.append((old, new, info)))
    assert wait_while(lamp, {Light.RED}, every=0.001) is Light.GREEN
    assert lamp.polls == 3 and heard == [(Light.RED, Light.GREEN, {"message": "go"})] and lamp.message == "go"
    assert [(t.old, t.new) for t in lamp.history] == [(Light.RED, Light.GREEN)]


def test_wait_while_returns_the_held_state_at_its_timeout_and_never_polls_a_state_it_does_not_wait_in():
    lamp = Lamp(10 ** 9)
    t0 = time.monotonic()
    assert wait_while(lamp, {Light.RED}, every=0.01, timeout=0.1) is Light.RED
    assert 0.1 <= time.monotonic() - t0 < 2 and lamp.polls >= 2
    green = Lamp(1)
    green.poll()
    assert wait_while(green, {Light.RED}) is Light.GREEN and green.polls == 1


def test_a_move_the_machine_does_not_allow_is_refused():
    lamp = Lamp(1)
    with pytest.raises(IllegalTransition, match="red -> off"):
        lamp._to(Light.OFF)
    assert lamp.state is Light.RED and lamp.history == []


def test_the_tuners_states_end_in_done_cancelled_or_failed():
    assert set(Tuner.ALLOWED) == set(TuneState)
    assert Tuner.ALLOWED[TuneState.RUNNING] == {TuneState.DONE, TuneState.CANCELLED, TuneState.FAILED}
    assert all(not Tuner.ALLOWED[s] for s in (TuneState.DONE, TuneState.CANCELLED, TuneState.FAILED))
    assert TuneState.DONE == "done"  # the report and the panels read the plain word


def _moves(host: ShareHost) -> list[tuple[str, str]]:
    return [(t.old.value, t.new.value) for t in host.history]


def test_a_share_that_cannot_start_fails_and_stays_failed(tmp_path):
    host = ShareHost(tmp_path / "no-such-koboldcpp", port=None, info=False, cpu_only=True)
    assert host.state is ShareState.IDLE
    with pytest.raises(ShareError, match="does not exist"):
        host.start()
    assert host.state is ShareState.FAILED and "does not exist" in host.message
    assert _moves(host) == [("idle", "starting"), ("starting", "failed")]
    host.stop()  # nothing to stop: it stays failed
    assert host.state is ShareState.FAILED
    with pytest.raises(IllegalTransition):
        host.start()  # one start per host


def test_an_engine_that_exits_while_starting_fails_the_share_and_leaves_nothing(tmp_path):
    exe = tmp_path / "rpc-server"  # llama.cpp's own host: a plain program with -H/-p
    exe.write_text("#!/bin/sh\necho 'no device to share' >&2\nexit 3\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    host = ShareHost(exe, port=None, info=False)
    with pytest.raises(ShareError, match="exit code 3"):
        host.start(timeout=20)
    assert host.state is ShareState.FAILED and _moves(host) == [("idle", "starting"), ("starting", "failed")]


def test_a_stop_before_start_is_a_stop(tmp_path):
    host = ShareHost(tmp_path / "koboldcpp.py", port=None, info=False)
    host.stop()
    assert host.state is ShareState.STOPPED and _moves(host) == [("idle", "stopped")]


def test_the_share_host_notices_its_engine_ending_and_stops_cleanly(kcpp_script):
    host = ShareHost(kcpp_script, port=None, info=False, cpu_only=True).start()
    try:
        assert host.state is ShareState.SHARING and host.poll() is None
        pids = host._proc.tree_pids()
        psutil.Process(host._proc.pid).kill()
        assert wait_while(host, {ShareState.SHARING}, every=0.05, timeout=20) is ShareState.ENDED
        assert host.poll() == -9 and host.history[-1].info["code"] == -9
    finally:
        host.stop()
    assert host.state is ShareState.STOPPED and gone(pids)
    assert _moves(host) == [("idle", "starting"), ("starting", "sharing"), ("sharing", "ended"),
                            ("ended", "stopping"), ("stopping", "stopped")]
