"""The settings file: checked field by field (a bad field falls back to its default, the rest is kept),
the original set aside once under a new name, the user told once, a read-only folder reported,
interrupted saves' temp files cleaned at start."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phoenix_gui.config import (SettingsSaveError, UserSettings, check_fields, load_settings,
                                save_settings)
from phoenix_gui.storage import remove_leftovers

GOOD = {"model_path": "/models/q.gguf", "context": 8192, "cache_type": "q8_0", "port": 5010, "backend": "llama-server",
        "recent_models": ["/models/q.gguf"], "split": [1.0, 2.0], "devices": ["GPU-a", "GPU-b"]}


@pytest.mark.parametrize("field,bad", [
    ("gpulayers", "all"), ("cache_type", "banana"), ("context", "big"), ("context", 10), ("context", 1e300),
    ("batch", -1), ("batch", True), ("port", 70000), ("port", "5001x"), ("host", "a b"), ("host", "x\r\ncalc.exe"),
    ("split", [float("nan"), 1]), ("split", "1 2"), ("split", [-1, 2]), ("devices", "GPU-a"), ("devices", [1, 2]),
    ("recent_models", 5), ("recent_models", ["ok", 3]), ("executables", ["x"]), ("executables", {"banana": "/x"}),
    ("flash_attn", "yes"), ("objective", "slowest"), ("backend", "ollama"), ("model_path", "a\x00b"), ("moecpu", -3),
    ("geometry", 12),
])
def test_a_bad_field_falls_back_and_the_rest_is_kept(config_dir, field, bad):
    config_dir.mkdir(parents=True)
    p = config_dir / "settings.json"
    raw = json.dumps(dict(GOOD, **{field: bad}))
    p.write_text(raw)
    s, msg = load_settings(p)
    assert getattr(s, field) == getattr(UserSettings(), field)
    for k, val in GOOD.items():
        if k != field:
            assert getattr(s, k) == val, k
    assert f"bad values ({field})" in msg and "\n" not in msg
    aside = list(config_dir.glob("settings.damaged-*.json"))
    assert len(aside) == 1 and aside[0].read_text() == raw and aside[0].name in msg
    # told once: the repaired file is written back, so the next start is quiet and keeps the rest
    s2, msg2 = load_settings(p)
    assert msg2 == "" and s2 == s


def test_non_utf8_bytes_lose_only_their_field(config_dir):
    config_dir.mkdir(parents=True)
    p = config_dir / "settings.json"
    p.write_bytes(b'{"model_path": "/models/\xff\xfe.gguf", "context": 8192, "port": 5010}')
    s, msg = load_settings(p)
    assert s.model_path is None and s.context == 8192 and s.port == 5010 and "model_path" in msg


def test_garbage_is_defaults_and_set_aside(config_dir):
    config_dir.mkdir(parents=True)
    p = config_dir / "settings.json"
    p.write_bytes(b"\x00\x01garbage{{{")
    s, msg = load_settings(p)
    assert s == UserSettings() and "damaged" in msg


def test_an_earlier_set_aside_copy_is_never_overwritten(config_dir):
    config_dir.mkdir(parents=True)
    p = config_dir / "settings.json"
    copies = []
    for i in range(3):  # three damaged starts within the same second
        p.write_text(json.dumps({"context": "bad", "port": 5000 + i}))
        load_settings(p)
        copies = sorted(config_dir.glob("settings.damaged-*.json"))
        assert len(copies) == i + 1
    assert sorted(json.loads(c.read_text())["port"] for c in copies) == [5000, 5001, 5002]


@settings(max_examples=80, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(UserSettings.__dataclass_fields__) + ["unknown"]),
                       st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats() | st.text(max_size=10)
                       | st.lists(st.integers(-3, 3) | st.text(max_size=3), max_size=4)
                       | st.dictionaries(st.text(max_size=12), st.text(max_size=3), max_size=2)))
def test_any_json_object_gives_usable_settings(data):
    """Whatever the file holds, every kept field passes its check again and the wizard can apply it."""
    s, bad = check_fields(data)
    again, bad2 = check_fields(json.loads(json.dumps(s.__dict__)))
    assert again == s and bad2 == []
    from phoenix_gui.hardware import demo_rig_path, load_rig
    from phoenix_gui.model import preset_model_info
    from phoenix_gui.session import WizardState

    st_ = WizardState(load_rig(demo_rig_path()))
    st_.set_model(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), None)
    st_.apply_user_settings(s)
    assert st_.plan() is not None


def test_leftover_temp_files_are_cleaned_at_start(config_dir):
    config_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = config_dir / f"settings.json.{int(dead.stdout)}.tmp"  # a process that has exited
    gone.write_text("{")
    busy = config_dir / f"settings.json.{os.getppid()}.tmp"  # a live process, just now: maybe saving
    busy.write_text("{")
    old = config_dir / f"settings.json.{os.getppid()}1.tmp"
    old.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    other = config_dir / "notes.tmp"
    other.write_text("mine")
    load_settings(config_dir / "settings.json")
    assert not gone.exists() and not old.exists() and busy.exists() and other.exists()


def test_removing_leftovers_in_a_missing_folder_is_quiet(tmp_path):
    assert remove_leftovers(tmp_path / "none", re.compile(r"^settings\.json\.([0-9]+)\.tmp$"), older_than_s=60) == []


def test_save_into_an_impossible_folder_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SettingsSaveError) as e:
        save_settings(UserSettings(), blocker / "config" / "settings.json")
    assert isinstance(e.value, OSError) and "could not be saved" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == [blocker]


def test_a_folder_that_cannot_be_written_is_reported_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    s, msg = load_settings(blocker / "config" / "settings.json")
    assert s == UserSettings() and "read-only" in msg


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_folder_is_reported(config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text(json.dumps(GOOD))
    config_dir.chmod(0o555)
    try:
        s, msg = load_settings(config_dir / "settings.json")
        assert s.context == 8192 and "read-only" in msg
        with pytest.raises(SettingsSaveError):
            save_settings(s, config_dir / "settings.json")
    finally:
        config_dir.chmod(0o755)


def test_good_settings_are_quiet(config_dir):
    config_dir.mkdir(parents=True)
    p = config_dir / "settings.json"
    save_settings(check_fields(GOOD)[0], p)
    s, msg = load_settings(p)
    assert msg == "" and s.context == 8192 and not list(config_dir.glob("settings.damaged-*"))
