"""Tuning probes past Phoenix's safety margin and recommends one sized from what it measured.

The margin (256 MiB per GPU by default) is a guess made before anything was measured, so the tune's
candidates are planned without it (never past a card's free memory). The engine here is koboldcpp's
stand-in wrapped so that its logged buffers are Phoenix's own prediction plus a hidden excess per card
(the test's law, unknown to Phoenix). One margin model: the calibration adds each card's measured excess to
its plans (once), and the recommendation keeps only a margin for noise and drift (64 MiB when the excess is
the same on every load); the user's --margin instead when one is given, said in the table, the JSON and the CLI."""

import json
from pathlib import Path

import pytest
from machine_helpers import run_tuner

from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.backends.tune import Tuner
from phoenix_gui.cli import main
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.hardware.rig import MIB
from phoenix_gui.model import read_model
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.autofit import auto_fit
from phoenix_gui.planner.calibration import with_calibration

FAKE = str(Path(__file__).with_name("fake_koboldcpp.py"))
EXCESS_MIB = [10.0, 20.0, -50.0]  # 1050 Ti, 2080, 1060: what the engine needs beyond the plan on each card
LAW_MS = [3.0, 1.2, 0.8]


def buffers_engine(tmp_path, excess_mib=EXCESS_MIB) -> str:
    """The stand-in, its logged buffers being the plan for its own command line plus the excess per card; a
    card whose plan plus excess is more than its free memory fails the load with an out-of-memory."""
    exe = tmp_path / "koboldcpp_buffers.py"
    exe.write_text(f"""import json, os, sys
argv = sys.argv[1:]
def opt(flag, n=1):
    if flag not in argv:
        return None
    i = argv.index(flag)
    return argv[i + 1:i + 1 + n] if n > 1 else argv[i + 1]
if "--version" not in argv:
    from phoenix_gui.hardware import demo_rig_path, load_rig
    from phoenix_gui.model import read_model
    from phoenix_gui.planner import PlanSettings, make_plan
    rig = load_rig(demo_rig_path())
    uuids = [g.uuid for g in rig.gpus]
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = tuple(uuids.index(u) for u in vis.split(",")) if vis else tuple(range(len(uuids)))
    ngl = int(opt("--gpulayers") or 0)
    ts = None
    if "--tensor_split" in argv:
        i = argv.index("--tensor_split") + 1
        ts = tuple(float(x) for x in argv[i:i + len(devices)])
    s = PlanSettings(context=int(opt("--contextsize")), batch=int(opt("--batchsize")), cache_type_k=opt("--quantkv"),
                     cache_type_v=opt("--quantkv"), flash_attn="--noflashattention" not in argv,
                     devices=devices if ngl else (), gpulayers=ngl, tensor_split=ts)
    plan = make_plan(read_model(opt("--model")), rig, s)
    excess = {list(excess_mib)!r}
    bufs = {{f"CUDA{{i}}": [(d.weights_bytes / {MIB}) + excess[d.gpu_index], d.kv_bytes / {MIB}, d.compute_bytes / {MIB}]
             for i, d in enumerate(plan.gpus)}}
    os.environ["FAKE_KCPP_BUFFERS"] = json.dumps(bufs)
    short = [i for i, d in enumerate(plan.gpus) if d.total_bytes + excess[d.gpu_index] * {MIB} > d.free_bytes]
    if short:
        os.environ["FAKE_KCPP_OOM_AT"] = f"{{short[0]}}:{{plan.gpus[short[0]].weights_bytes / {MIB}:.2f}}"
os.execv(sys.executable, [sys.executable, {FAKE!r}, *argv])
""")
    return str(exe)


@pytest.fixture
def q32(skeletons, monkeypatch, tmp_path):
    path = skeletons("qwen2.5-32b-instruct-q4_k_m")
    rig = load_rig(demo_rig_path())
    model = read_model(path)
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps({
        "gpus": [[g.uuid, ms] for g, ms in zip(rig.gpus, LAW_MS)], "cpu_ms": 6.0, "hop_ms": 0.5, "base_ms": 1.0,
        "layers": model.n_layer + 1, "output_x": 3.19}))
    return rig, model, str(path), buffers_engine(tmp_path)


def run(t, timeout=180):
    return run_tuner(t, timeout)


def test_the_tune_probes_past_the_guess_and_keeps_a_measured_margin(q32):
    rig, model, path, exe = q32
    base = PlanSettings(context=2048, port=free_port())
    t = run(Tuner(model, rig, path, base, exe, version="1.115.1", max_runs=5))
    assert t.state == "done", t.message
    # the predicted best was planned without the 256 MiB guess: it eats into it, and it loaded
    first = t.runs[0]
    assert first.label == "predicted best" and first.past_margin and first.outcome == "ok"
    assert any(d.state == "tight" for d in make_plan(model, rig, first.settings.with_(margin_mib=256)).gpus)
    assert all(d.state != "short" for r in t.runs for d in make_plan(model, rig, r.settings).gpus)  # never past free
    # every GPU's logged buffers were measured against the plan: the excess is the hidden law's
    assert t.calibration.mem_extra_mib[rig.gpus[1].uuid] == pytest.approx(20.0, abs=0.2)
    # the calibration carries the excess; the margin is the floor for noise and drift (the excess never varied)
    assert t.margin_source == "measured" and t.margin_mib == 64.0
    assert "64 MiB kept free per GPU, sized from what was measured" in t.margin_note
    assert "needed at most 20 MiB more than the plan on a GPU, which the calibration adds" in t.margin_note
    # the recommendation keeps that margin on the calibrated rig, and it holds more layers than the guess allows
    rec = t.recommended()
    assert rec.margin_mib == 64.0 and t.keeps_margin(t.winner.settings)
    p = make_plan(model, with_calibration(rig, t.calibration), rec)
    assert p.fits and min(d.headroom_bytes for d in p.gpus) >= 0
    guessed = auto_fit(model, rig, PlanSettings(context=2048), "fastest").plan
    assert p.gpulayers > guessed.gpulayers
    table = "\n".join(t.table())
    print(table)  # -s shows the tune table
    assert "* a probe: eats into the 256 MiB Phoenix keeps free per GPU before measuring" in table
    assert "Margin: 64 MiB kept free per GPU" in table


def test_the_users_margin_is_kept_and_shown(q32, capsys):
    rig, model, path, exe = q32
    rc = main(["tune", path, "--rig", str(demo_rig_path()), "--exe", exe, "--ctx", "2048", "--port", str(free_port()),
               "--max-runs", "3", "--margin", "700", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    assert d["margin_mib"] == 700.0 and d["margin_source"] == "yours" and d["guess_margin_mib"] == 256.0
    assert d["margin"].startswith("700 MiB kept free per GPU, as you set it (measured: 64 MiB)")
    assert d["runs"][0]["past_margin"] is True
    win = next(r for r in d["runs"][::-1] if r["label"] == d["winner"])
    s = PlanSettings(context=2048, devices=tuple(win["devices"]), gpulayers=win["gpulayers"],
                     tensor_split=tuple(win["tensor_split"]), margin_mib=700.0)
    cal_rig = with_calibration(rig, __import__("phoenix_gui.hardware.calibration", fromlist=["Calibration"])
                               .Calibration.from_dict(d["calibration"]))
    assert make_plan(model, cal_rig, s).fits  # the winner keeps the user's 700 MiB
    rc = main(["tune", path, "--rig", str(demo_rig_path()), "--exe", exe, "--ctx", "2048", "--port", str(free_port()),
               "--max-runs", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "Margin: 64 MiB kept free per GPU, sized from what was measured" in out
    rc = main(["tune", path, "--rig", str(demo_rig_path()), "--exe", exe, "--margin", "-5"])
    assert rc == 2 and "--margin" in capsys.readouterr().err


def test_a_constant_excess_is_counted_once(skeletons, monkeypatch, tmp_path):
    """The engine needs 150-300 MiB more than the plan on each card, the same on every load. The calibration
    carries that excess; the margin keeps only the floor for noise and drift. Counted in both (the margin
    once 64 MiB + the largest excess), the calibrated winner would leave layers off that the runs proved
    fit: here it holds more GPU layers than the double-counted margin allows, and still fits the truth."""
    excess = [150.0, 300.0, 200.0]
    path = skeletons("qwen2.5-32b-instruct-q4_k_m")
    rig, model = load_rig(demo_rig_path()), read_model(path)
    monkeypatch.setenv("FAKE_KCPP_COST_LAW", json.dumps({
        "gpus": [[g.uuid, ms] for g, ms in zip(rig.gpus, LAW_MS)], "cpu_ms": 6.0, "hop_ms": 0.5, "base_ms": 1.0,
        "layers": model.n_layer + 1, "output_x": 3.19}))
    base = PlanSettings(context=2048, port=free_port())
    t = run(Tuner(model, rig, str(path), base, buffers_engine(tmp_path, excess), version="1.115.1", max_runs=6))
    assert t.state == "done", t.message
    for g, x in zip(rig.gpus, excess):
        if g.uuid in t.calibration.mem_extra_mib:
            assert t.calibration.mem_extra_mib[g.uuid] == pytest.approx(x, abs=0.2)
    assert t.margin_mib == 64.0, t.margin_note
    w = next(r for r in t.runs if r.label == "calibrated winner")
    assert w.outcome == "ok", w.outcome  # it loaded: plan + excess fits every card
    cal_rig = with_calibration(rig, t.calibration)
    from phoenix_gui.planner.tuning import calibrated_best
    twice = calibrated_best(model, cal_rig, base.with_(margin_mib=64.0 + max(excess)), t.budgets)
    assert w.settings.gpulayers > twice.gpulayers, (w.split, twice)
    # the recommendation keeps the floor free with the true excess on every card
    p = make_plan(model, rig, t.recommended())
    for d in p.gpus:
        assert d.total_bytes + excess[d.gpu_index] * MIB + 64 * MIB <= d.free_bytes


def test_a_slice_keeps_the_guessed_margin_and_an_unlogged_card_gets_the_largest_excess_seen():
    """The candidates probe without a margin, but a slice run is for a card's speed and its excess: one
    that runs out of memory on an engine needing more than the plan teaches neither, and the calibrated
    winner was then planned to the brim of a card whose excess nobody measured (bench_tune: measured, it
    no longer kept the margin, and nothing was kept). So a slice keeps Phoenix's guessed margin free, and a
    card no load logged gets the largest excess logged on another."""
    from dataclasses import replace

    from phoenix_gui.model import preset_model_info
    from phoenix_gui.model.slice import slice_info
    from phoenix_gui.planner.calibration import memory_corrections
    from phoenix_gui.planner.budgets import Budgets
    from phoenix_gui.planner.recovery import PROBE_MARGIN_MIB
    from phoenix_gui.planner.tuning import SLICE_CONTEXT, SLICE_MARGIN_MIB, slice_runs, with_counts

    rig = load_rig(demo_rig_path())
    model = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    probe = PlanSettings(context=4096, margin_mib=PROBE_MARGIN_MIB)
    eight = make_plan(slice_info(model, 8), rig, with_counts(probe.with_(context=SLICE_CONTEXT), {0: 9})).gpus[0]
    gpus = list(rig.gpus)
    gpus[0] = replace(gpus[0], free_bytes=eight.total_bytes + eight.reserve_bytes + 100 * MIB)  # 8 layers: 100 MiB left
    rig = replace(rig, gpus=gpus)
    runs = slice_runs(model, rig, probe, None, Budgets(), limit=4)
    on0 = next(r for r in runs if r.gpu == 0)
    assert on0.layers < 8
    assert make_plan(on0.model, rig, on0.settings.with_(margin_mib=SLICE_MARGIN_MIB)).fits
    pairs = [("a", 1000 * MIB, 1080 * MIB), ("b", 1000 * MIB, 1060 * MIB), ("a", 900 * MIB, 970 * MIB)]
    assert memory_corrections(pairs, ["a", "b", "c"]) == {"a": 80.0, "b": 60.0, "c": 80.0}
    assert memory_corrections(pairs) == {"a": 80.0, "b": 60.0}
    assert memory_corrections([("a", 1000 * MIB, 900 * MIB)], ["a", "c"]) == {"a": -100.0}  # nothing to carry over
