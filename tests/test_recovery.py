"""After an out-of-memory the retry is the fastest plan the planner's own ledger, corrected by what the
failure showed, says fits; never a plan it says is short (issue 11's seed-rig example)."""

import dataclasses

from phoenix_gui.backends.diagnose import classify
from phoenix_gui.backends.launch import smaller_plan
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.hardware.rig import MIB
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.hardware.calibration import Calibration
from phoenix_gui.planner.calibration import with_calibration
from phoenix_gui.planner.budgets import Budgets
from phoenix_gui.planner.recovery import fits, learn, recover

OOM_4285 = "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 4285.00 MiB on device 0: cudaMalloc failed: out of memory"


def seed():
    rig = load_rig(demo_rig_path())
    model = preset_model_info("qwen2.5-32b-instruct-q4_k_m")
    plan = make_plan(model, rig, PlanSettings(gpulayers=65, tensor_split=(4, 8, 6)))
    return rig, model, plan


def test_the_seed_rig_retry_is_a_plan_that_fits():
    rig, model, plan = seed()
    assert [d.layers for d in plan.gpus] == [15, 29, 21] and not plan.fits  # short on every card
    f = classify([OOM_4285], -11, True, device_names=[d.name for d in plan.gpus])
    assert f.device == 0 and f.requested_mib == 4285
    s = smaller_plan(model, rig, plan.settings, plan, f)
    p = make_plan(model, rig, s)
    # the old retry launched 50 layers at 0:29:21, 1,035 MiB short on the 2080 and 1,256 on the 1060
    assert all(d.state == "fits" for d in p.devices), [(d.name, d.state) for d in p.devices]
    assert [d.layers for d in p.gpus] == [9, 25, 16] and p.gpulayers == 50
    # and it is the fastest plan within the caps: auto-fit under the same budget finds nothing faster
    from phoenix_gui.planner.autofit import auto_fit

    capped = auto_fit(model, rig, s.with_(tensor_split=None, gpulayers=None)).plan
    assert p.predicted_tokens_per_s >= 0.97 * min(capped.predicted_tokens_per_s, plan.predicted_tokens_per_s)


def test_the_failure_caps_the_card_and_the_same_plan_is_never_relaunched():
    rig, model, plan = seed()
    r = recover(model, rig, plan, 0, 4285.0)
    b = r.budgets.get(rig.gpus[0].uuid)
    # context (300 MiB) + the failed 4,285 MiB weights buffer did not fit: the cap is just below it
    # and the card's own free memory (3,786 MiB) is lower still
    assert b.free_cap_bytes == min(300 * MIB + 4285 * MIB - MIB, plan.gpus[0].free_bytes)
    assert b.extra_per_layer_bytes == 0  # the buffer was the size the plan predicted
    assert not fits(rig, plan, r.budgets)
    assert "fastest plan that fits now has 50 GPU layers" in r.reason


def test_a_buffer_bigger_than_predicted_costs_every_later_layer_on_that_card():
    rig, model, _ = seed()
    plan = make_plan(model, rig, PlanSettings(gpulayers=50, tensor_split=(9, 25, 16)))
    w0 = plan.gpus[0].weights_bytes / MIB  # ~2,463 MiB predicted; the engine wanted 900 MiB more
    r = recover(model, rig, plan, 0, w0 + 900)
    b = r.budgets.get(rig.gpus[0].uuid)
    assert b.extra_per_layer_bytes == int(900 * MIB) // 9
    p = make_plan(model, rig, r.settings)
    assert p.gpus[0].layers < 9 and fits(rig, p, r.budgets) and all(d.fits for d in p.devices)
    # what was learned rides along: a second failure on another card keeps the first card's cap
    r2 = recover(model, rig, p, 1, p.gpus[1].weights_bytes / MIB)
    assert r2.budgets.get(rig.gpus[0].uuid) == b
    p2 = make_plan(model, rig, r2.settings)
    assert fits(rig, p2, r2.budgets) and p2.gpus[0].layers <= p.gpus[0].layers


def test_no_plan_fits_is_one_sentence_and_none():
    rig, model, _ = seed()
    # a context no device can hold next to the weights: nothing fits after the failure either
    plan = make_plan(model, rig, PlanSettings(context=131072, gpulayers=65, tensor_split=(4, 8, 6)))
    rig_small = rig
    rig_small.system.ram_available_bytes = 8 << 30  # and little RAM left
    r = recover(model, rig_small, plan, 0, 4285.0)
    assert r.settings is None and r.reason.startswith("No plan fits:") and r.reason.count(".") == 1
    f = classify([OOM_4285], -11, True, device_names=[d.name for d in plan.gpus])
    assert smaller_plan(model, rig_small, plan.settings, plan, f) is None and "No plan fits" in f.message


def test_budgets_travel_in_the_settings():
    rig, model, plan = seed()
    r = recover(model, rig, plan, 0, 4285.0)
    assert Budgets.from_settings(r.settings).to_dict() == r.budgets.to_dict()
    assert r.settings == r.settings.with_(budgets=Budgets())  # not part of the plan's identity


def test_an_out_of_memory_the_measured_excess_explains_does_not_cap_the_card_twice():
    """A load that ran out of memory with no size in the log shows that the card held less than the plan
    plus what the engine needs beyond it there. While tuning (the bare rig) that caps the card at the
    plan's bytes; once the tune measured the engine's excess on that card (the calibration's mem_extra_mib,
    which every later plan there carries), the cap is the plan plus that excess. Before, the cap stayed at
    the plan's bytes and the excess was added to the plans on top: a plan one layer smaller, which fits the
    card with the excess, was ruled out (bench_tune's misses on rigs whose engine needs 50-100 MiB more)."""
    rig = load_rig(demo_rig_path())
    model = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    s = PlanSettings(context=4096, margin_mib=0.0, devices=(1,), gpulayers=20, tensor_split=(20.0,))
    d = make_plan(model, rig, s).gpus[0]
    gpus = list(rig.gpus)
    gpus[1] = dataclasses.replace(gpus[1], free_bytes=d.total_bytes + d.reserve_bytes + 100 * MIB)
    rig = dataclasses.replace(rig, gpus=gpus)
    big = make_plan(model, rig, s)
    assert big.fits  # the plan fits the card; with the engine's 200 MiB beyond it, the load ran out of memory
    _, budgets = learn(rig, big, 0, None, Budgets())
    assert not fits(rig, big, budgets)  # never relaunched
    smaller = s.with_(gpulayers=19, tensor_split=(19.0,))
    assert big.gpus[0].weights_bytes - make_plan(model, rig, smaller).gpus[0].weights_bytes > 100 * MIB  # a layer
    cal_rig = with_calibration(rig, Calibration(mem_extra_mib={rig.gpus[1].uuid: 200.0}))
    p = make_plan(model, cal_rig, smaller)
    assert p.fits and fits(cal_rig, p, budgets)  # 19 layers + 200 MiB fit the card: the runs' law allows it
    assert not fits(cal_rig, make_plan(model, cal_rig, s), budgets)
    assert budgets.get(rig.gpus[1].uuid).cap() == big.gpus[0].total_bytes - MIB  # while probing: as before
    # the budgets travel in the settings with the cap kept apart
    assert Budgets.from_settings(budgets.into(s)).to_dict() == budgets.to_dict()
