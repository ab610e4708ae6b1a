"""The wizard's plain-Python state, without Qt."""

import json

import pytest

from phoenix_gui.backends.kcpps import KcppsError, read_kcpps
from phoenix_gui.config import UserSettings, load_settings, save_settings
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import make_plan
from phoenix_gui.session import WizardState


@pytest.fixture
def st():
    s = WizardState(load_rig(demo_rig_path()))
    s.set_model(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), None)
    return s


def test_starts_like_llamacpp_default_split_by_free_memory():
    st = WizardState(load_rig(demo_rig_path()))  # no model yet; with one it opens on the fastest fit (issue 21)
    free = [g.free_bytes for g in st.rig.gpus]
    assert [round(st.percent(i), 3) for i in st.devices] == [round(100 * f / sum(free), 3) for f in free]


def test_lock_keeps_share_while_others_move(st):
    a, b, c = st.devices
    st.set_share(a, 20)
    st.set_locked(b, True)
    kept = st.percent(b)
    st.set_share(c, 10)
    assert st.percent(b) == pytest.approx(kept)
    assert st.percent(c) == pytest.approx(10)
    assert st.percent(a) == pytest.approx(100 - kept - 10)
    # a locked GPU cannot be moved, and with all others locked nothing can
    assert st.set_share(b, 90) == pytest.approx(kept)
    st.set_locked(a, True)
    assert st.set_share(c, 50) == pytest.approx(10)


def test_share_is_clamped_to_what_locked_cards_leave(st):
    a, b, c = st.devices
    st.set_share(a, 30)
    st.set_locked(a, True)
    assert st.set_share(b, 95) == pytest.approx(70)
    assert st.percent(c) == pytest.approx(0)


def test_plan_follows_state(st):
    a, b, c = st.devices
    st.set_gpulayers(40)
    st.shares = {a: 1.5, b: 4.5, c: 3.0}
    st.changed()
    p = st.plan()
    assert [d.layers for d in p.gpus] == [7, 20, 13]
    assert p is st.plan()  # cached until the next change


def test_auto_fit_stores_exact_counts(st):
    fit = st.run_auto_fit("fastest")
    counts = [int(x) for x in fit.settings.tensor_split]
    assert [st.shares[i] for i in st.devices] == counts
    assert [d.layers for d in st.plan().gpus] == counts
    assert st.plan().fits and st.current_explanation()
    st.set_share(st.devices[0], 10)
    assert st.current_explanation() == []  # stale once the user drags


def test_excluding_and_reordering_gpus(st):
    a, b, c = st.devices
    st.set_included(a, False)
    assert st.devices == [b, c] and sum(st.percent(i) for i in st.devices) == pytest.approx(100)
    st.move_gpu(c, -1)
    assert st.devices == [c, b]
    assert [d.name for d in st.plan().gpus] == [st.rig.gpus[c].short_name, st.rig.gpus[b].short_name]


def _as_this_pc(rig):
    import dataclasses

    return dataclasses.replace(rig, simulated=False)


def test_settings_roundtrip(tmp_path):
    rig = _as_this_pc(load_rig(demo_rig_path()))
    st = WizardState(rig)
    st.set_model(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), None)
    st.run_auto_fit("fastest")
    st.set_context(8192)
    st.set_cache_type("q8_0")
    st.set_port(5010)
    us = st.to_user_settings(UserSettings())
    save_settings(us, tmp_path / "s.json")
    back, msg = load_settings(tmp_path / "s.json")
    assert msg == ""
    st2 = WizardState(_as_this_pc(load_rig(demo_rig_path())))
    st2.set_model(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), None)
    st2.apply_user_settings(back)
    assert st2.settings() == st.settings()


def test_a_simulated_rigs_split_is_not_saved_as_this_pcs(st):
    st.run_auto_fit("fastest")
    us = st.to_user_settings(UserSettings())
    assert us.devices is None and us.split is None


@pytest.mark.parametrize("content,words", [("{not json", "damaged"), ("[1, 2]", "damaged"),
                                           (json.dumps({"context": "big"}), "bad values (context)"),
                                           (json.dumps({"recent_models": 5}), "bad values (recent_models)")])
def test_corrupt_settings_are_reported_and_replaced(tmp_path, content, words):
    # a bad field falls back to its default (tests/test_settings_file.py: the rest is kept); the
    # original is set aside and the repaired file written back, so the next start is quiet
    p = tmp_path / "settings.json"
    p.write_text(content)
    s, msg = load_settings(p)
    assert s == UserSettings() and words in msg
    aside = list(tmp_path.glob("settings.damaged-*.json"))
    assert len(aside) == 1 and aside[0].read_text() == content and aside[0].name in msg
    assert load_settings(p) == (UserSettings(), "")


def test_kcpps_import_gives_a_baseline(st, tmp_path):
    k = tmp_path / "seed config.kcpps"
    k.write_text(json.dumps({"model_param": "/models/q.gguf", "usecuda": ["normal", "0", "1", "2"], "gpulayers": 40,
                             "tensor_split": [1.5, 4.5, 3], "contextsize": 4096, "quantkv": 0, "flashattention": True,
                             "blasbatchsize": 512, "port_param": 5001}))
    imp = read_kcpps(k)
    assert imp.model_path == "/models/q.gguf" and imp.gpu_ids is None
    st.apply_kcpps(imp)
    assert st.baseline is not None and st.baseline.fits
    assert [d.layers for d in st.baseline.gpus] == [7, 20, 13]
    seed = make_plan(st.model, st.rig, st.settings())
    assert st.baseline.predicted_tokens_per_s == pytest.approx(seed.predicted_tokens_per_s)


def test_kcpps_errors(tmp_path):
    with pytest.raises(KcppsError, match="does not exist"):
        read_kcpps(tmp_path / "none.kcpps")
    (tmp_path / "x.kcpps").write_text("not json")
    with pytest.raises(KcppsError, match="not JSON"):
        read_kcpps(tmp_path / "x.kcpps")


def test_session_package_is_qt_free():
    import ast
    from pathlib import Path

    import phoenix_gui.session as m

    for f in Path(m.__file__).parent.glob("*.py"):
        tree = ast.parse(f.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any(x.startswith(("PySide6", "pyqtgraph")) for x in names), f.name
