"""A read-only data folder is named as the cause, not reported as the engine failing (issue 24, item 15).

`phoenix bench` used to say the engine "could not be started (Permission denied)" and name a log that was
never written. Read-only for real: a tmpfs mounted read-only (root ignores a folder's mode bits), both
without a logs folder (creating it fails) and with one (creating the log file fails)."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.hardware import demo_rig_path
from phoenix_gui.model import write_skeleton

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))


def _mount(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture(params=["no logs folder", "read-only logs folder"])
def read_only_data(request, tmp_path):
    d = tmp_path / f"data-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    r = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d))
    if r.returncode != 0:
        pytest.skip(f"a read-only folder needs a mount here, which is not allowed: {r.stderr.strip()}")
    try:
        if request.param == "read-only logs folder":
            (d / "logs").mkdir()
        assert _mount("-o", "remount,ro", str(d)).returncode == 0
        yield d, (d / "logs")
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _phoenix(*args, data: Path):
    return subprocess.run([sys.executable, "-m", "phoenix_gui", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PHOENIX_DATA_DIR": str(data), "QT_QPA_PLATFORM": "offscreen"})


def _names_the_folder(r, logs: Path):
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err)
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert str(logs) in err and "Read-only file system" in err, err
    assert "could not be started" not in err and "(log:" not in err, err  # not the engine's, and no phantom log


@pytest.mark.parametrize("command", ["bench", "launch"])
def test_bench_and_launch_name_the_read_only_log_folder(read_only_data, tmp_path, command):
    data, logs = read_only_data
    tiny = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf")
    r = _phoenix(command, str(tiny), "--rig", str(demo_rig_path()), "--exe", FAKE, "--ctx", "2048", "--split", "1", "1",
                 "1", "--port", str(free_port()), data=data)
    _names_the_folder(r, logs)


def test_tune_names_the_read_only_log_folder(read_only_data, tmp_path):
    data, logs = read_only_data
    tiny = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf")
    r = _phoenix("tune", str(tiny), "--json", "--rig", str(demo_rig_path()), "--exe", FAKE, "--ctx", "2048", "--budget-s", "30",
                 "--max-runs", "2", "--prompt-tokens", "16", "--gen-tokens", "4", data=data)
    _names_the_folder(r, logs)


def test_share_names_the_read_only_log_folder(read_only_data):
    from phoenix_gui.backends.share import ShareHost
    from phoenix_gui.validate import InputError

    data, logs = read_only_data
    host = ShareHost(FAKE, host="127.0.0.1", port=free_port(), info=False, log_path=logs / "share.log")
    with pytest.raises(InputError) as e:
        host.start(timeout=10)
    msg = str(e.value)
    assert str(logs) in msg and "cannot be started" not in msg and "\n" not in msg, msg
    assert host.poll() is None  # nothing was started


def test_the_wizards_launch_reports_no_log_file(read_only_data, tmp_path):
    """The launch machine (the wizard's and the CLI's path): the failure names the folder, no log path."""
    from phoenix_gui.backends.lifecycle import LaunchMachine, State
    from phoenix_gui.hardware import load_rig
    from phoenix_gui.model import read_model
    from phoenix_gui.planner import PlanSettings, make_plan

    data, logs = read_only_data
    tiny = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf")
    rig, model = load_rig(demo_rig_path()), read_model(tiny)
    plan = make_plan(model, rig, PlanSettings(context=2048, port=free_port()))
    m = LaunchMachine(plan, rig, model, str(tiny), FAKE, log_dir=logs)
    m.start()
    assert m.state is State.FAILED and str(logs) in m.message and m.outcome.log_path is None, m.message
    assert json.dumps(m.failure.kind) == '"input"'
