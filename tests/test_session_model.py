"""The evented session model (Qt-free): typed setters, topics, one apply/settings translation."""

import pytest

from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings
from phoenix_gui.session import CONTEXT, LAUNCH, PLAN, SettingError, WizardState, parse_split


@pytest.fixture
def st():
    s = WizardState(load_rig(demo_rig_path()))
    s.set_model(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), None)
    return s


def test_no_untyped_update_remains(st):
    assert not hasattr(st, "update")


def test_events_name_what_changed(st):
    seen = []
    st.on(CONTEXT, seen.append)
    st.set_port(5050)
    assert seen == []  # a launch setting is not a context change
    st.set_context(8192)
    assert len(seen) == 1 and CONTEXT in seen[0] and PLAN in seen[0] and LAUNCH not in seen[0]


def test_grouped_changes_are_announced_once(st):
    seen = []
    st.on(PLAN, seen.append)
    st.run_auto_fit("fastest")
    assert len(seen) == 1


def test_setters_refuse_nonsense(st):
    for call in (lambda: st.set_cache_type("banana"), lambda: st.set_port(70000), lambda: st.set_port(0),
                 lambda: st.set_host("127.0.0.1\r\ncalc.exe"), lambda: st.set_batch(0),
                 lambda: st.set_split_text("1 nan"), lambda: st.set_split_text("1 2 3 4"),
                 lambda: st.set_split_text("0 0 0")):
        with pytest.raises(SettingError):
            call()
    assert st.cache_type == "f16" and st.port == 5001 and st.host == "127.0.0.1"


def test_apply_and_settings_are_inverse(st):
    a, b, c = st.devices
    s = PlanSettings(context=8192, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn=True, batch=256, gpulayers=40,
                     tensor_split=(4.0, 1.5), devices=(c, a), backend="llama-server", host="127.0.0.1", port=5077)
    st.apply(s)
    assert st.devices == [c, a] and b not in st.included
    assert st.settings() == s
    st.apply(st.settings())
    assert st.settings() == s


def test_kcpps_and_retry_and_saved_settings_use_apply(st, monkeypatch):
    calls = []
    orig = WizardState.apply
    monkeypatch.setattr(WizardState, "apply", lambda self, s, **k: (calls.append(s), orig(self, s, **k)))
    st.run_auto_fit("fastest")
    from phoenix_gui.config import UserSettings

    st.apply_user_settings(UserSettings())
    assert len(calls) == 2


def test_layers_move_whole_layers_and_locked_cards_keep_theirs(st):
    a, b, c = st.devices
    st.set_gpulayers(40)
    st.set_split_text("10 20 10")
    st.set_locked(c, True)
    assert st.set_layers(a, 13) == 13
    counts = st.layer_counts()
    assert counts == {a: 13, b: 17, c: 10}
    assert [d.layers for d in st.plan().gpus] == [13, 17, 10]
    assert st.set_layers(a, 99) == 30  # clamped to what the locked card leaves


def test_split_text_like_koboldcpp(st):
    st.set_gpulayers(40)
    st.set_split_text("1.5 4.5 3")
    assert [d.layers for d in st.plan().gpus] == [7, 20, 13]
    assert parse_split("1.5, 4.5, 3") == [1.5, 4.5, 3.0]


def test_retick_restores_the_share(st):
    a, b, c = st.devices
    st.set_split_text("9 25 16")
    before = {i: st.percent(i) for i in st.devices}
    st.set_included(b, False)
    st.set_included(b, True)
    assert {i: st.percent(i) for i in st.devices} == pytest.approx(before)
    assert st.percent(b) > 0


def test_cpu_only_plan_offloads_nothing(st):
    for gi in list(st.devices):
        st.set_included(gi, False)
    assert st.offloaded_layers == 0
    p = st.plan()
    assert p.gpus == [] and p.cpu.layers == st.max_layers


def test_a_tunes_margin_survives_apply_and_reaches_the_plan(st):
    """'Use the winner' applies a tune's recommendation with the margin it measured; the split page must
    judge that plan against it, not against the 256 MiB guess."""
    st.apply(st.settings().with_(margin_mib=84.0))
    assert st.settings().margin_mib == 84.0
    assert st.plan().settings.margin_mib == 84.0
    with pytest.raises(SettingError, match="margin"):
        st.set_margin(float("nan"))
    st.set_margin(300)
    assert st.plan().settings.margin_mib == 300
