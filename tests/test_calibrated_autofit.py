"""Auto-fit's fill order follows what a tune measured on this PC, not only the spec sheet."""

from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings
from phoenix_gui.planner.autofit import auto_fit
from phoenix_gui.planner.calibration import Calibration, with_calibration


def test_a_card_measured_slow_is_filled_after_the_others():
    rig = load_rig(demo_rig_path())
    model = preset_model_info("qwen2.5-32b-instruct-q4_k_m")
    plain = auto_fit(model, rig, PlanSettings(), "fastest")
    assert "RTX 2080" in plain.plan.explanation[1] and "fastest memory" in plain.plan.explanation[1]
    rtx = next(g for g in rig.gpus if "2080" in g.name)
    slow = with_calibration(rig, Calibration(gpu_scale={rtx.uuid: 6.0}, runs=6))  # measured six times slower
    tuned = auto_fit(model, slow, PlanSettings(), "fastest")
    rtx_line = next(line for line in tuned.plan.explanation if line.startswith("RTX 2080"))
    assert "fastest memory" not in rtx_line  # no longer filled first
