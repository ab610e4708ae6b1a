"""Split weights of any magnitude: only their ratios matter (issue 24, item 13).

`--split 1e308 1e308 1e308` used to sum to infinity (layers 0/0/33 where equal weights mean an even split)
and reach the engine as 309-digit numbers that it reads as infinity; 1e-300 was rounded to 0, which the
engine reads as "no split". Through the real CLI, the real .kcpps reader and writer and the real exports."""

import json
import os
import subprocess
import sys

import pytest

from phoenix_gui.backends.commandline import launch_command, request_for, sh_script
from phoenix_gui.engines.koboldcpp.options import kcpps_config
from phoenix_gui.backends.kcpps import read_kcpps
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings, make_plan, plan_layers
from phoenix_gui.validate import InputError, split

MAGNITUDES = [1e308, 1.7e308, 1e200, 1e-300, 1e-320, 5e-324]


def _sane(text: str) -> bool:
    """A number as an engine should get it: short, finite, not zero."""
    return len(text) <= 12 and 0 < float(text) < float("inf")


def _gpu_layers(plan) -> list[int]:
    return [d.layers for d in plan.gpus]


def _phoenix(*args):
    return subprocess.run([sys.executable, "-m", "phoenix_gui", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})


@pytest.mark.parametrize("w", ["1e308", "1e-300"])
@pytest.mark.parametrize("backend", ["koboldcpp", "llama-server"])
def test_cli_equal_weights_of_any_size_split_evenly_and_reach_the_engine_as_sane_numbers(w, backend):
    r = _phoenix("plan", "--demo", "--backend", backend, "--split", w, w, w, "--json")
    assert r.returncode in (0, 3), r.stderr
    d = json.loads(r.stdout)
    layers = [dev["layers"] for dev in d["devices"][:3]]
    assert max(layers) - min(layers) <= 1 and sum(layers) > 3, layers
    argv = d["argv"]
    if backend == "koboldcpp":
        i = argv.index("--tensor_split")
        weights = argv[i + 1:i + 4]
    else:
        weights = argv[argv.index("-ts") + 1].split(",")
    assert weights == ["1", "1", "1"], weights
    assert all(len(a) < 300 for a in argv)


@pytest.mark.parametrize("x", MAGNITUDES)
def test_equal_weights_place_layers_evenly_whatever_their_magnitude(x):
    rig = load_rig(demo_rig_path())
    plan = make_plan(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), rig, PlanSettings(tensor_split=(x, x, x)))
    layers = _gpu_layers(plan)
    assert max(layers) - min(layers) <= 1, layers
    cmd = launch_command(plan, rig, "/m/q.gguf")
    i = cmd.argv.index("--tensor_split")
    assert all(_sane(a) for a in cmd.argv[i + 1:i + 4]), cmd.argv[i + 1:i + 4]
    assert plan_layers(33, 33, [x, x, x]) == plan_layers(33, 33, [1.0, 1.0, 1.0])


def test_unequal_huge_weights_keep_their_ratio():
    rig = load_rig(demo_rig_path())
    plan = make_plan(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), rig,
                     PlanSettings(tensor_split=(1e308, 5e307, 5e307)))
    a, b, c = _gpu_layers(plan)
    assert abs(a - (b + c)) <= 2 and abs(b - c) <= 1, (a, b, c)
    assert plan.tensor_split == [1.0, 0.5, 0.5]


def test_kcpps_with_huge_weights_imports_evenly_and_exports_sane_numbers(tmp_path):
    src = tmp_path / "in.kcpps"
    src.write_text(json.dumps({"contextsize": 4096, "usecuda": ["normal"], "gpulayers": 40,
                               "tensor_split": [1e308, 1e308, 1e308]}))
    imp = read_kcpps(src)
    rig = load_rig(demo_rig_path())
    plan = make_plan(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), rig, imp.settings)
    layers = _gpu_layers(plan)
    assert max(layers) - min(layers) <= 1, layers
    cfg = kcpps_config(request_for(plan, rig, "/m/q.gguf"))
    assert cfg["tensor_split"] == [1.0, 1.0, 1.0]
    text = json.dumps(cfg)
    assert "e+" not in text and "Infinity" not in text
    script = sh_script(launch_command(plan, rig, "/m/q.gguf"))
    assert "1e+308" not in script and "0" * 30 not in script


def test_weights_in_the_usual_range_are_kept_as_given_and_infinite_ones_refused():
    from phoenix_gui.validate import split_weights

    for w in ([1.5, 4.5, 3.0], [24.0, 12.0, 11.0], [0.5, 0.25, 0.25], [12288.0, 8192.0]):
        assert split_weights(w) == w
        assert list(split(w)) == w
    assert split_weights(split_weights([1e308, 3e307])) == split_weights([1e308, 3e307]) == [1.0, 0.3]
    for bad in ([float("inf"), 1.0], [10 ** 400, 1], [float("nan")]):
        with pytest.raises(InputError):
            split(bad)
