"""Auto-fit's fill order follows a tune's calibration: the per-layer cost measured on this PC decides which
card is filled first, not the spec sheet (the speed model's bandwidth ranking)."""

from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.autofit import auto_fit
from phoenix_gui.hardware.calibration import Calibration
from phoenix_gui.planner.calibration import with_calibration


def seed():
    return load_rig(demo_rig_path()), preset_model_info("qwen2.5-32b-instruct-q4_k_m")


def layers(fit) -> dict[str, int]:
    return {d.name: d.layers for d in fit.plan.gpus}


def test_a_card_measured_slow_is_filled_after_the_others():
    rig, model = seed()
    plain = auto_fit(model, rig, PlanSettings(), "fastest")
    rtx = next(g for g in rig.gpus if "2080" in g.name)
    assert any(line.startswith("RTX 2080") and "fastest memory, filled first" in line for line in plain.plan.explanation)
    slow = with_calibration(rig, Calibration(gpu_scale={rtx.uuid: 6.0}, runs=6))  # measured six times slower
    tuned = auto_fit(model, slow, PlanSettings(), "fastest")
    rtx_line = next(line for line in tuned.plan.explanation if line.startswith("RTX 2080"))
    assert "filled first" not in rtx_line and "measured on this PC" in rtx_line
    # a 7B model fits on one card: the card filled first takes it all, so the order decides the plan
    small = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    assert layers(auto_fit(small, rig, PlanSettings(context=2048))) == {"RTX 2080": 29}
    got = auto_fit(small, slow, PlanSettings(context=2048))
    assert layers(got) == {"GTX 1060 6GB": 29} and got.plan.fits
    # and it is the faster plan by the calibration: 29 layers on the slow-measured 2080 predict less
    on_2080 = make_plan(small, slow, PlanSettings(context=2048, devices=(1,), gpulayers=29))
    assert got.plan.predicted_tokens_per_s > 1.5 * on_2080.predicted_tokens_per_s


def test_the_measured_fastest_card_is_filled_first():
    rig, model = seed()
    g1060 = next(g for g in rig.gpus if "1060" in g.name)
    fast = with_calibration(rig, Calibration(gpu_scale={g1060.uuid: 0.2}, runs=6))  # five times the model's speed
    tuned = auto_fit(model, fast, PlanSettings(), "fastest")
    line = next(x for x in tuned.plan.explanation if x.startswith("GTX 1060"))
    assert "fastest as measured on this PC, filled first" in line
    # without a calibration the explanation still speaks of memory speed
    plain = auto_fit(model, rig, PlanSettings(), "fastest")
    assert not any("measured on this PC" in x for x in plain.plan.explanation)


def test_a_plan_is_never_its_own_rival():
    # the 2080 alone is reached from every set of cards that includes it: the same plan, not a rival within noise
    rig, _ = seed()
    fit = auto_fit(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), rig, PlanSettings(context=2048))
    assert layers(fit) == {"RTX 2080": 29}
    assert not any(line.startswith("Within noise: 29 layers on RTX 2080 predicts") for line in fit.plan.explanation)
