"""Tune v2 (issue 22) end to end through the launch machine and koboldcpp's stand-in: the measurements win
over the fit (a stand-in whose slice runs and whole-model runs disagree), and a fit that lands on a bound
is said, held at the speed model's figure, with the run that would pin it down."""

import json
from pathlib import Path

import pytest
from machine_helpers import run_tuner

from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.tune import Tuner
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import read_model
from phoenix_gui.planner import PlanSettings

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))


def law(rig, n, ms, **kw):
    return {"gpus": [[g.uuid, x] for g, x in zip(rig.gpus, ms)], "cpu_ms": 6.0, "hop_ms": 0.5, "base_ms": 1.0,
            "layers": n, "output_x": 3.19, **kw}


def run(t, timeout=180):
    return run_tuner(t, timeout)


@pytest.fixture
def q7(skeletons):
    path = skeletons("qwen2.5-7b-instruct-q4_k_m")
    return load_rig(demo_rig_path()), read_model(path), str(path)


@pytest.mark.parametrize("slice_x", [0.6, 1.7])
def test_slices_and_whole_runs_disagree_and_the_measurements_win(q7, monkeypatch, slice_x):
    """A layer in a slice costs slice_x times what it costs in the whole model, so the slice runs teach the
    cards wrong. Whatever the fit then ranks first, the kept plan is the fastest safe plan the tune measured
    at the asked context, and where the fit ranked another measured plan first, the table says so."""
    rig, model, path = q7
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps(law(rig, model.n_layer + 1, [3.0, 1.2, 0.8], slice_x=slice_x)))
    t = run(Tuner(model, rig, path, PlanSettings(context=2048, port=free_port()), FAKE, version="1.115.1"))
    assert t.state == "done", t.message
    assert any(r.model is not None and r.outcome == "ok" for r in t.runs)  # slice runs took part
    safe = [r.measured_tps for r in t.runs if r.outcome == "ok" and r.model is None and t.keeps_margin(r.settings)
            and r.settings.context == 2048]
    kept = [r.measured_tps for r in t.runs if r.outcome == "ok" and t._same(r.settings, t.winner.settings)]
    assert sum(kept) / len(kept) >= max(safe), "\n".join(t.table())
    # the slice factor is a term of the fit, shown with the others
    assert "a layer in a slice" in "\n".join(t.table())
    assert abs(t.fit.slice - 1.0) > 0.02, t.fit  # it moved off 1: the runs disagree and the fit saw it
    if t.disagreement:
        assert "the measurement wins" in t.disagreement and t.disagreement in "\n".join(t.table())


def test_a_fit_on_its_floor_is_said_held_and_pinned_down(q7, monkeypatch):
    """The 2080 runs a layer in 0.004 ms (about 1 % of what its memory speed allows): a factor that low is past
    the fit's floor (0.02), a gap in the runs, not a measurement. The tune holds it at the speed model's
    figure, says so, and spends a run (in place of a designed candidate) on pinning the fit down."""
    rig, model, path = q7
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps(law(rig, model.n_layer + 1, [3.0, 0.004, 0.8])))
    t = run(Tuner(model, rig, path, PlanSettings(context=2048, port=free_port()), FAKE, version="1.115.1"))
    assert t.state == "done", t.message
    table = "\n".join(t.table())
    uuid = rig.gpus[1].uuid
    assert (f"gpu:{uuid}", "floor") in [(term, side) for term, side, _ in t.fit.held], table
    assert t.calibration.gpu_scale[uuid] == 1.0  # held at the speed model's figure, not clamped to 0.02
    assert "The fit put RTX 2080's time per layer at 0.00" in table and "past its floor (0.02x)" in table
    assert any(r.label == "pins the fit down" and r.outcome == "ok" for r in t.runs), table
    assert t.report()["fit"] == [line for line in t.notes() if line in t.report()["fit"]]


def test_the_fits_favourite_measured_slower_is_not_kept(q7):
    """The rule both the Tuner and bench_tune keep by: a plan the calibration ranks first but that measured
    10 % slower than another loses to it, and the disagreement names it (before, the fit's favourite was
    kept unless the two were within 1 % by the fit)."""
    from phoenix_gui.hardware.calibration import Calibration
    from phoenix_gui.planner.tuning import keep, with_counts

    rig, model, _ = q7
    base = PlanSettings(context=2048)
    on_1060, on_2080 = with_counts(base, {2: 29}), with_counts(base, {1: 29})
    cal = Calibration(gpu_scale={rig.gpus[1].uuid: 2.0, rig.gpus[2].uuid: 0.5})  # the fit: the 1060 is 4x faster
    runs = [(on_1060, 30.0), (on_2080, 33.0)]
    assert keep(model, rig, runs, cal) == on_2080
    from phoenix_gui.planner.tuning import disagreement

    top, predicted, measured = disagreement(model, rig, runs, cal, on_2080, 0.01)
    assert top == on_1060 and measured == 30.0 and predicted > 33.0
