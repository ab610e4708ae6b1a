"""Tune on this PC (backends/tune.py) end to end through the launch machine: koboldcpp's stand-in with a
hidden per-device cost law for the GPU split (the tune must find the law's fastest split and learn its
costs), an out-of-memory as data, cancel, the calibration store, and the CLI."""

import dataclasses
import itertools
import json
import math
import time
from pathlib import Path

import psutil
import pytest

from phoenix_gui.backends import calibrations
from phoenix_gui.backends import tune as tune_mod
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.calibrations import export_to, find, import_from, save
from phoenix_gui.backends.tune import Tuner
from phoenix_gui.cli import main
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import read_model
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.hardware.calibration import Calibration
from phoenix_gui.planner.calibration import with_calibration
from phoenix_gui.planner.tuning import with_counts
from machine_helpers import gone, run_tuner

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))
LAW_MS = [3.0, 1.2, 0.8]  # per layer on the 1050 Ti, 2080, 1060: the 1060 is fastest, unlike the model says
CPU_MS, HOP_MS, BASE_MS = 6.0, 0.5, 1.0
OUTPUT_X = 3.19  # the output layer of Qwen2.5-7B Q4_K_M (Q6_K, 152k tokens) holds 3.19 layers' bytes: its time


def law(rig, n):
    return {"gpus": [[g.uuid, ms] for g, ms in zip(rig.gpus, LAW_MS)], "cpu_ms": CPU_MS, "hop_ms": HOP_MS,
            "base_ms": BASE_MS, "layers": n, "output_x": OUTPUT_X}


def law_tps(plan):
    """What the stand-in will measure for a plan, from the law (the test knows it, Phoenix does not)."""
    used = [(d, d.layers) for d in plan.gpus if d.layers]
    cpu = plan.n_layer + 1 - sum(n for _, n in used)
    ms = BASE_MS + sum(n * LAW_MS[d.gpu_index] for d, n in used) + cpu * CPU_MS
    out = next((d for d in plan.gpus if d.has_output), None)
    ms += (OUTPUT_X - 1) * (LAW_MS[out.gpu_index] if out is not None else CPU_MS)
    return 1000 / (ms + HOP_MS * (len(used) + (1 if cpu else 0) - 1))


@pytest.fixture
def q7(skeletons, monkeypatch):
    path = skeletons("qwen2.5-7b-instruct-q4_k_m")
    rig = load_rig(demo_rig_path())
    model = read_model(path)
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps(law(rig, model.n_layer + 1)))
    return rig, model, str(path)


def tuner(q7, **kw):
    rig, model, path = q7
    return Tuner(model, rig, path, PlanSettings(context=2048, port=free_port()), FAKE, version="1.115.1", **kw)


def run(t, timeout=120):
    return run_tuner(t, timeout)


def law_fastest(rig, model):
    """Every split over every set of cards that Phoenix says fits: the law's best speed."""
    best = 0.0
    total = model.n_layer + 1
    base = PlanSettings(context=2048)
    for k in (1, 2, 3):
        for sub in itertools.combinations(range(3), k):
            for counts in itertools.product(range(1, total + 1), repeat=k):
                if sum(counts) <= total:
                    p = make_plan(model, rig, with_counts(base, dict(zip(sub, counts))))
                    if p.fits:
                        best = max(best, law_tps(p))
    return best


def test_the_tune_finds_the_laws_fastest_split_and_learns_its_costs(q7):
    rig, model, _ = q7
    t = run(tuner(q7))
    assert t.state == "done", t.message
    assert len(t.runs) <= 6 and all(r.outcome == "ok" for r in t.runs)
    for r in t.runs:  # the stand-in measured what the law says, for the model or a slice of it
        assert r.measured_tps == pytest.approx(law_tps(make_plan(r.model or model, rig, r.settings)), rel=0.01)
    # slice runs: the model's first layers alone on a device, from files that are gone once the tune ends
    slices = [r for r in t.runs if r.model is not None]
    assert len(slices) >= 2 and all(r.label.startswith("slice on ") and r.model.n_layer < model.n_layer for r in slices)
    assert all(len({d for d in (r.settings.devices or ())}) <= 1 for r in slices)
    assert all(not Path(r.model_path).exists() for r in slices) and t._slice_dir is None
    assert "first 8 of 28 layers alone on GPU" in "\n".join(t.table())
    assert t.winner.measured_tps == pytest.approx(law_fastest(rig, model), rel=0.001)
    assert t.winner.model is None  # the winner is a plan of the whole model
    best = next(r for r in t.runs if r.label == "predicted best")
    assert t.winner.measured_tps > 1.4 * best.measured_tps  # the model's pick (the 2080) is slower here
    learned = t.calibration.per_layer_ms
    for name, ms in zip(("GTX 1050 Ti", "RTX 2080", "GTX 1060 6GB"), LAW_MS):
        assert learned[name] == pytest.approx(ms, rel=0.05)
    assert learned["CPU"] == pytest.approx(CPU_MS, rel=0.05)
    for r in t.runs:  # after tuning the calibrated model predicts every run
        assert r.calibrated_tps == pytest.approx(r.measured_tps, rel=0.05)
    assert "times as fast as the predicted best" in t.speedups()[0]
    # saved, found by key, and it changes later predictions on this rig
    cal, note = find(rig, "koboldcpp", "1.115.1")
    assert cal is not None and note.startswith(f"calibrated on this PC ({len(t.runs)} runs, ")
    s = t.winner.settings
    assert make_plan(model, with_calibration(rig, cal), s).predicted_tokens_per_s == pytest.approx(
        t.winner.measured_tps, rel=0.05)
    assert make_plan(model, rig, s).predicted_tokens_per_s < 0.7 * t.winner.measured_tps


def test_each_run_is_repeated_and_the_spread_measures_the_noise(q7, monkeypatch):
    rig, model, _ = q7
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps({**law(rig, model.n_layer + 1), "noise": 0.03, "seed": 7}))
    t = run(tuner(q7))
    assert t.state == "done", t.message
    ok = [r for r in t.runs if r.outcome == "ok"]
    assert ok and all(len(r.repeats) == 3 and r.spread > 0 for r in ok)
    for r in ok:  # the run's speed is the mean of its repeats, and the law's within the noise
        assert r.measured_tps == pytest.approx(sum(r.repeats) / 3)
        assert r.measured_tps == pytest.approx(law_tps(make_plan(r.model or model, rig, r.settings)), rel=0.12)
    # the pooled spread finds the law's noise per repeat (12 degrees of freedom: within a factor 1.6)
    assert 0.03 / 1.6 < t.noise * 3 ** 0.5 < 0.03 * 1.6
    assert t.report()["noise"] == t.noise and len(t.report()["runs"][0]["repeats_tps"]) == 3
    assert t.winner.measured_tps > 0.93 * law_fastest(rig, model)


def one_card_holds(tmp_path, uuid: str, layers: int, first_uuid: str) -> str:
    """The stand-in with its out-of-memory tied to one physical card, as a real card's memory is. The
    stand-in's FAKE_KCPP_MAX_LAYERS limits whatever card is engine device 0 (CUDA0); this wrapper keeps the
    limit only when that card is `uuid` (CUDA_VISIBLE_DEVICES lists UUIDs; unset: the rig's first GPU).
    Without it, a plan that puts the 1060 first (auto-fit's calibrated fill order does) ran out of memory
    on the 1060 for the 2080's sake, which no real rig does. It execs, so the launcher's pid is the engine's."""
    exe = tmp_path / "koboldcpp_one_card.py"
    exe.write_text(f"""import os, sys
first = (os.environ.get("CUDA_VISIBLE_DEVICES") or {first_uuid!r}).split(",")[0]
if first == {uuid!r}:
    os.environ["FAKE_KCPP_MAX_LAYERS"] = "{layers}"
else:
    os.environ.pop("FAKE_KCPP_MAX_LAYERS", None)
os.execv(sys.executable, [sys.executable, {FAKE!r}, *sys.argv[1:]])
""")
    return str(exe)


def test_an_out_of_memory_is_data_and_the_tune_goes_on(q7, monkeypatch, tmp_path):
    rig, model, path = q7
    monkeypatch.setenv("FAKE_KCPP_OOM_MODE", "clean")
    exe = one_card_holds(tmp_path, rig.gpus[1].uuid, 15, rig.gpus[0].uuid)  # the 2080 holds 15 layers at most
    t = run(Tuner(model, rig, path, PlanSettings(context=2048, port=free_port()), exe, version="1.115.1"))
    assert t.state == "done", t.message
    oom = [r for r in t.runs if r.outcome == "out of memory"]
    assert oom and oom[0].label == "predicted best"  # 29 layers on the 2080 alone
    cap = t.budgets.get(rig.gpus[1].uuid).free_cap_bytes
    assert cap is not None and cap < rig.gpus[1].free_bytes
    later = t.runs[t.runs.index(oom[0]) + 1:]
    assert later and all(r.outcome == "ok" for r in later)  # nothing else broke the learned budget
    assert t.winner.outcome == "ok"


def test_cancel_leaves_nothing_running(q7, monkeypatch):
    monkeypatch.setenv("FAKE_KCPP_LOAD_S", "20")
    t = tuner(q7)
    t.start()
    end = time.monotonic() + 20
    while not (t._m and t._m.launch.process):
        assert time.monotonic() < end
        t.poll()
        time.sleep(0.02)
    pid = t._m.launch.process.pid
    assert psutil.pid_exists(pid) and 0 < t.time_left() <= t.budget_s and 0 <= t.fraction() < 1
    t0 = time.monotonic()
    t.cancel()
    assert time.monotonic() - t0 < 12
    assert t.state == "cancelled" and not t.poll() and gone([pid])


def test_budget_stops_the_runs(q7):
    t = run(tuner(q7, budget_s=2.0, max_runs=20))
    assert t.state == "done" and t.winner is not None
    # a run starts only while the budget has room for it: the tune ends within one run of the budget
    assert 1 <= len(t.runs) < 6 and t.elapsed <= 2.0 + max(r.seconds for r in t.runs) + 1.0


def test_a_calibration_applies_by_key_and_a_change_says_why(q7):
    rig, model, _ = q7
    key = calibrations.rig_key(rig, "koboldcpp", "1.115.1")
    cal = Calibration(gpu_scale={g.uuid: 2.0 for g in rig.gpus}, cpu_scale=2.0, runs=5, key=key, created=0.0)
    save(cal)
    got, note = find(rig, "koboldcpp", "1.115.1")
    assert got == cal and note == "calibrated on this PC (5 runs, 1970-01-01)"
    assert find(rig, "koboldcpp")[0] == cal  # the version unknown (phoenix plan): the newest for these GPUs
    assert find(rig, "koboldcpp", "1.116")[1] == ("The calibration from 1970-01-01 no longer applies: koboldcpp is now "
                                                  "1.116 (it was measured with 1.115.1); tune again.")
    other = load_rig(Path(demo_rig_path()).with_name("gaming-upgrade-3090-2070.toml"))
    assert find(other, "koboldcpp", "1.115.1") == (None, "The calibration from 1970-01-01 no longer applies: the GPUs "
                                                         "changed; tune again.")
    assert find(rig, "llama-server") == (None, "")
    s = PlanSettings(context=2048)
    bare = make_plan(model, rig, s).predicted_tokens_per_s
    assert make_plan(model, with_calibration(rig, got), s).predicted_tokens_per_s == pytest.approx(bare / 2, rel=0.05)


def test_export_never_overwrites_and_import_checks(tmp_path):
    cal = Calibration(runs=3, key={"gpus": [], "driver": "", "engine": "llama-server", "version": "b1"})
    out = tmp_path / "mine.json"
    out.write_text("the user's file")
    with pytest.raises(ValueError, match="already exists"):
        export_to(cal, str(out))
    assert out.read_text() == "the user's file"
    export_to(cal, str(tmp_path / "shared.json"))
    assert import_from(str(tmp_path / "shared.json")) == cal
    for text, why in (("{", "not JSON"), ('{"gpu_scale": {"x": "fast"}, "key": {"engine": "koboldcpp"}}',
                                          "A speed factor must be a number, not 'fast'"),
                      ('{"cpu_scale": 1e9, "key": {"engine": "koboldcpp"}}', "between 0.01 and 100"),
                      ('{"cpu_scale": 1.0}', "does not say which PC and engine")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=why):
            import_from(str(bad))


def test_phoenix_tune_and_then_plan_use_the_calibration(q7, capsys):
    rig, model, path = q7
    rigfile = str(demo_rig_path())
    rc = main(["tune", path, "--rig", rigfile, "--exe", FAKE, "--ctx", "2048", "--port", str(free_port()),
               "--split", "1", "1", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Benchmark of every run: 128 prompt tokens, then 32 generated tokens, 3 times on each load" in out
    assert "Noise of one run's measured speed: 0.10% (the repeats' spread" in out  # the law has none: the floor
    assert "times as fast as your config" in out and "Kept:" in out and "about" in err
    assert "your config            all layers 1:1:1 on all GPUs" in out
    rc = main(["plan", path, "--rig", rigfile, "--ctx", "2048", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0 and "calibrated on this PC (" in err
    plain = make_plan(model, rig, PlanSettings(context=2048)).predicted_tokens_per_s
    assert not math.isclose(json.loads(out)["predicted_tokens_per_s"], plain, rel_tol=0.05)
    rc = main(["tune", path, "--rig", rigfile, "--exe", FAKE, "--budget-s", "nan"])
    assert rc == 2 and "--budget-s takes seconds" in capsys.readouterr().err
    rc = main(["tune", "--import", str(Path(path))])
    err = capsys.readouterr().err
    assert rc == 2 and "is too large (" in err and "to be a calibration" in err  # a model is no calibration


def test_the_tune_json(q7, capsys):
    rig, _, path = q7
    rc = main(["tune", path, "--rig", str(demo_rig_path()), "--exe", FAKE, "--ctx", "2048",
               "--port", str(free_port()), "--max-runs", "3", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    assert d["state"] == "done" and len(d["runs"]) == 3 and d["n_gen"] == 32
    assert d["runs"][-1]["label"] == "calibrated winner" and d["calibration"]["runs"] == 3
    assert all(r["measured_tps"] > 0 for r in d["runs"])


def test_a_faster_run_at_a_smaller_context_is_never_kept(q7):
    """The context is the user's requirement: a CPU candidate at half of it teaches the CPU's cost, and
    measuring faster does not make it the recommendation."""
    rig, model, path = q7
    rig = dataclasses.replace(rig, gpus=[])  # this PC without its GPUs
    t = Tuner(model, rig, path, PlanSettings(context=2048, port=free_port()), FAKE, version="1.115.1")
    asked, smaller = PlanSettings(context=2048, devices=(), gpulayers=0), PlanSettings(context=1024, devices=(), gpulayers=0)
    t.runs = [tune_mod.TuneRun("predicted best", asked, 5.0, measured_tps=5.0, outcome="ok"),
              tune_mod.TuneRun("candidate 2", smaller, 5.0, measured_tps=5.5, outcome="ok")]
    t._to(tune_mod.TuneState.RUNNING)  # as start() does: a tune concludes only while running
    t._conclude()
    assert t.state == "done" and t.winner.settings.context == 2048, t.message


def test_when_the_slices_cannot_be_written_the_tune_goes_on_and_says_why(q7, monkeypatch):
    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tune_mod, "write_slice", full_disk)
    t = run(tuner(q7))
    assert t.state == "done" and t.winner is not None, t.message
    assert all(r.model is None for r in t.runs) and t._slice_dir is None  # whole-model runs only, no folder left
    assert t.slice_note == ("No slice runs: the model's first layers could not be written to a file "
                            "([Errno 28] No space left on device).")
    assert t.slice_note in t.table()
