"""The session's fields are written only through their setters (evented Fields), and per-device state is kept
by device id, so it follows a card when the rig lists it elsewhere."""

import dataclasses

import pytest

from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.session import CONTEXT, DEVICES, LAUNCH, PLAN, SPLIT, SettingError, WizardState
from phoenix_gui.session.devices import device_id


@pytest.fixture
def st():
    s = WizardState(load_rig(demo_rig_path()))
    s.set_model(preset_model_info("qwen2.5-32b-instruct-q4_k_m"), None)
    return s


def _recorder(st, topics):
    seen = []
    st.on(topics, seen.append)
    return seen


def test_writing_a_field_announces_it_once(st):
    seen = _recorder(st, [CONTEXT, LAUNCH])
    st.batch = 256
    assert seen == [frozenset({CONTEXT, PLAN})] and st.batch == 256 and st.settings().batch == 256
    st.port = 5002
    assert seen[-1] == frozenset({LAUNCH, PLAN}) and len(seen) == 2


def test_writing_the_same_value_announces_nothing(st):
    st.cache_type = "q8_0"
    seen = _recorder(st, [CONTEXT])
    st.cache_type = "q8_0"
    st.batch = st.batch
    assert seen == []


def test_a_bad_value_is_one_plain_value_error_and_changes_nothing(st):
    seen = _recorder(st, [CONTEXT, LAUNCH])
    plan = st.plan()
    for name, bad in (("cache_type", "q9_9"), ("batch", "big"), ("margin_mib", float("nan")), ("port", 1.5),
                      ("backend", "ollama"), ("threads", 0)):
        before = getattr(st, name)
        with pytest.raises(ValueError) as e:
            setattr(st, name, bad)
        assert type(e.value) is SettingError and str(e.value)  # one sentence for the user
        assert getattr(st, name) == before
    assert seen == [] and st.plan() is plan  # nothing announced, the plan not even recomputed


def test_a_setter_announces_once_even_when_it_keeps_the_value(st):
    # a control that typed 4100 is redrawn with the 4096 kept
    st.set_context(4096)
    seen = _recorder(st, [CONTEXT])
    st.set_context(4100)
    assert st.context == 4096 and seen == [frozenset({CONTEXT, PLAN})]


def test_per_device_state_follows_the_device_when_the_rig_is_reordered(st):
    a, b, c = st.devices
    ids = [device_id(g) for g in st.rig.gpus]
    st.set_included(a, False)
    st.set_locked(b, True)
    st.set_split_text("3 1")
    st.move_gpu(c, -1)
    share = {ids[i]: st.percent(i) for i in st.devices}
    order = [ids[i] for i in st.devices]
    split = st.settings().tensor_split
    # the same cards, listed in another order (same uuids)
    st.rig = dataclasses.replace(st.rig, gpus=list(reversed(st.rig.gpus)))
    new = [device_id(g) for g in st.rig.gpus]
    assert new == list(reversed(ids))
    assert [new[i] for i in st.devices] == order
    assert {new[i] for i in st.locked} == {ids[b]}
    assert ids[a] not in {new[i] for i in st.included}
    assert {new[i]: st.percent(i) for i in st.devices} == pytest.approx(share)
    # the engine gets the same cards in the same order with the same split
    assert [device_id(st.rig.gpus[i]) for i in st.settings().devices] == order
    assert st.settings().tensor_split == split
    # and a card ticked again gets back its place in the split
    st.set_included(new.index(ids[a]), True)
    assert new.index(ids[a]) in st.devices


def test_device_ids_prefer_the_uuid_then_node_and_index():
    rig = load_rig(demo_rig_path())
    g = rig.gpus[0]
    assert device_id(g) == ("", "uuid", g.uuid.lower())
    assert device_id(dataclasses.replace(g, uuid="")) == ("", "index", g.index)
    assert device_id(dataclasses.replace(g, uuid="", node="10.0.0.2:50052")) == ("10.0.0.2:50052", "index", g.index)


def test_tune_calibration_goes_through_the_rig_setter(st):
    seen = _recorder(st, [PLAN])
    st.set_calibration(None)  # already none: nothing changes, nothing is announced
    assert seen == [] and st.rig.calibration is None


def test_a_split_move_is_one_announcement(st):
    a, b, c = st.devices
    seen = _recorder(st, [DEVICES, SPLIT])
    st.set_included(a, False)  # ticks, locks, shares and the parked share all change: one redraw
    st.set_share(b, 30)
    st.move_gpu(c, -1)
    assert seen == [frozenset({DEVICES, SPLIT, PLAN}), frozenset({SPLIT, PLAN}), frozenset({DEVICES, PLAN})]


def test_per_device_state_is_read_only_by_index(st):
    with pytest.raises(TypeError):
        st.shares[0] = 5.0  # a write goes through the setter (st.shares = {...}), which announces it
