"""The tuner's candidate plans as an experiment design (planner/tuning.py): on the seed rig with a hidden
per-device cost law, a handful of runs must pin down every device's cost.

The law is a calibration (factors on the speed model's device times and hop cost) the tuner does not see;
a "measurement" is the law's tokens/s times 1 + N(0, noise). When every candidate uses the same cards,
the hop count never changes and, since every layer is somewhere, the device times move along a
near-constant total: the hop cost then leaks into the device costs. benchmarks/bench_tune.py measures the
same on 200 random rigs."""

import dataclasses
import random

import numpy as np
import pytest

from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.hardware.rig import MIB
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.hardware.calibration import Calibration
from phoenix_gui.planner.calibration import with_calibration
from phoenix_gui.planner.budgets import Budgets
from phoenix_gui.planner.recovery import fits
from phoenix_gui.planner.tuning import (NOISE_FLOOR, calibrated_best, candidates, design, features, learned,
                                       measured_noise, run_seconds, with_counts)

NOISE = 0.002  # a measured run's relative noise: small, so what is left is the design's own error
BASE = PlanSettings(context=4096)


@pytest.fixture(scope="module")
def seed():
    """The seed rig (GTX 1050 Ti, RTX 2080, GTX 1060) with Qwen2.5-32B: 65 layers, some in RAM."""
    return load_rig(demo_rig_path()), preset_model_info("qwen2.5-32b-instruct-q4_k_m")


def law(rig, hop: float) -> Calibration:
    # the 1050 Ti faster than the model says, the 2080 slower: the truth ranks the cards differently
    return Calibration(gpu_scale={g.uuid: f for g, f in zip(rig.gpus, (0.7, 1.5, 0.8))}, cpu_scale=0.8, hop_scale=hop)


def tune(model, rig, truth, rng) -> tuple[Calibration, list]:
    """The tuner's loop without the engine: the candidates, a fit, the calibrated best measured too, a refit."""
    def measure(s):
        return make_plan(model, with_calibration(rig, truth), s).predicted_tokens_per_s * (1 + rng.gauss(0, NOISE))

    runs = [(s, measure(s)) for s in candidates(model, rig, BASE, limit=5)]
    pick = calibrated_best(model, with_calibration(rig, learned(model, rig, runs, noise=NOISE)), BASE)
    runs.append((pick, measure(pick)))
    return learned(model, rig, runs, noise=NOISE), runs


@pytest.mark.parametrize("hop", [0.5, 2.5])
def test_six_runs_learn_every_devices_cost_within_5_percent(seed, hop):
    rig, model = seed
    truth = law(rig, hop)
    for draw in range(6):  # six independent sets of measurements, not one lucky draw
        cal, runs = tune(model, rig, truth, random.Random(draw))
        assert len(runs) <= 6
        errors = {g.name: cal.gpu_scale[g.uuid] / truth.gpu_scale[g.uuid] - 1 for g in rig.gpus}
        errors["CPU"] = cal.cpu_scale / truth.cpu_scale - 1
        assert all(abs(e) <= 0.05 for e in errors.values()), (draw, {k: f"{e:+.1%}" for k, e in errors.items()})


def test_the_candidates_fit_differ_and_change_the_hop_count(seed):
    rig, model = seed
    plans = candidates(model, rig, BASE, limit=5)
    assert len(plans) == 5
    assert len({(s.devices, s.tensor_split) for s in plans}) == 5
    assert all(fits(rig, make_plan(model, rig, s), Budgets()) and make_plan(model, rig, s).fits for s in plans)
    best = make_plan(model, rig, plans[0]).predicted_tokens_per_s
    assert best >= max(make_plan(model, rig, s).predicted_tokens_per_s for s in plans)  # the predicted best first
    hops = {round(features(model, rig, s).hops * 1e6) for s in plans}
    assert len(hops) >= 2, "every candidate has the same number of hops: their cost cannot be told apart"


def test_a_run_that_would_take_minutes_is_not_worth_its_information(seed):
    """Wholly in RAM teaches the CPU's cost without a hop: kept where the run is quick, left out where
    its benchmark alone would take minutes (here: one thread)."""
    rig, model = seed
    best = candidates(model, rig, BASE, limit=1)[0]
    ram = with_counts(best, {})
    slow = ram.with_(threads=1)
    assert run_seconds(make_plan(model, rig, slow)) > 120
    assert design(model, rig, [best, ram], 2) == [best, ram]
    assert design(model, rig, [best, slow], 2) == [best]


def test_the_law_is_what_the_fit_models():
    """A law's token time is exactly base + factors x the bare model's features: what the tests above
    measure is what the fit can learn (no hidden term makes 5 % easy or impossible)."""
    rig, model = load_rig(demo_rig_path()), preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    truth = law(rig, 2.0)
    s = candidates(model, rig, BASE, limit=1)[0]
    f = features(model, rig, s)
    t = f.base + float(np.dot([*truth.gpu_scale.values(), truth.cpu_scale, truth.hop_scale], [*f.times, f.hops]))
    assert 1 / t == pytest.approx(make_plan(model, with_calibration(rig, truth), s).predicted_tokens_per_s, rel=1e-6)


def test_after_an_interruption_the_design_goes_on_where_it_left_off(seed):
    """After an out-of-memory the tuner asks again: the runs already measured count, nothing repeats."""
    rig, model = seed
    plans = candidates(model, rig, BASE, limit=5)
    assert candidates(model, rig, BASE, limit=3, done=plans[:2]) == plans[2:]


def test_without_gpus_the_runs_already_measured_are_not_proposed_again():
    rig = dataclasses.replace(load_rig(demo_rig_path()), gpus=[])
    model = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    plans = candidates(model, rig, BASE, limit=4)
    assert len(plans) == 4 and all(not s.gpulayers for s in plans)  # threads, batch: what the CPU can change
    again = candidates(model, rig, BASE, limit=4, done=plans[:2])
    assert again[:2] == plans[2:] and not any(s in plans[:2] for s in again)


def test_the_noise_of_a_run_is_the_repeats_spread_pooled_over_runs_of_any_speed():
    # two plans of very different speed, each 3 repeats with the same relative scatter of +-2 %
    fast, slow = [98.0, 100.0, 102.0], [4.9, 5.0, 5.1]
    per_repeat = 0.02  # the sample sd of (-2 %, 0, +2 %); a run's mean of 3 has sd / sqrt(3)
    assert measured_noise([fast, slow]) == pytest.approx(per_repeat / 3 ** 0.5, rel=0.01)
    assert measured_noise([fast, [50.0]]) == measured_noise([fast])  # a single repeat tells nothing
    assert measured_noise([[50.0], []]) is None
    assert measured_noise([[10.0, 10.0, 10.0]]) == NOISE_FLOOR  # three that agree do not make a run exact


def test_the_calibrated_best_is_the_best_split_of_the_calibrated_rig():
    """calibrated_best finds the fastest split the calibrated rig allows, checked against every split of
    the layers over the cards (in the asked order; the rest in RAM). A bench_tune rig: a 1050 Ti 2.8 times
    slower than the model says beside a 3090 that holds 22 layers alone. Alone, it is the fastest
    one-card start; a layer on the 1050 Ti (listed first, it holds the buffers) lets the 3090 hold 23: a
    step of two moves at once (onto a card auto-fit left out and one more onto the 3090), which a climb of
    single-layer moves from the one-card start never took (kept 0.96 of the true best)."""
    from phoenix_gui.hardware import list_rigs

    rigs = {r.name: r for r in (load_rig(p) for p in list_rigs())}
    pool = {g.name: g for r in rigs.values() for g in r.gpus}
    base_rig = rigs["Pascal workstation"]
    gpus = [dataclasses.replace(pool[name], index=i, uuid=f"GPU-test-{i}", free_bytes=free * MIB,
                                used_bytes=pool[name].total_bytes - free * MIB, display_attached=False)
            for i, (name, free) in enumerate((("NVIDIA GeForce GTX 1050 Ti", 3792), ("NVIDIA GeForce RTX 3090", 4240)))]
    rig = dataclasses.replace(base_rig, name="bench", gpus=gpus, simulated=True)
    model = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    cal_rig = with_calibration(rig, Calibration(gpu_scale={"GPU-test-0": 2.806, "GPU-test-1": 0.5725},
                                                cpu_scale=1.198, hop_scale=2.847))
    base = BASE.with_(margin_mib=64.0)
    total = model.n_layer + 1
    splits = [{0: a, 1: b} for a in range(total + 1) for b in range(total + 1 - a)]
    plans = [make_plan(model, cal_rig, with_counts(base, {d: n for d, n in c.items() if n})) for c in splits]
    best = max(p.predicted_tokens_per_s for p in plans if p.fits)
    got = make_plan(model, cal_rig, calibrated_best(model, cal_rig, base)).predicted_tokens_per_s
    assert got >= best * 0.999, (got, best)
