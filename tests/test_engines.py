"""Engine profiles: every engine-version rule in one place, chosen by the backend or --era."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from phoenix_gui.cli import main
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.model import preset_model_info
from phoenix_gui.planner import PlanSettings, make_plan
from phoenix_gui.planner.compute import ComputeInputs, layer_peak, output_peak
from phoenix_gui.engines import PROFILES, engine_for
from phoenix_gui.engines.koboldcpp.profile import KOBOLDCPP_1115
from phoenix_gui.engines.llama_server.profile import LLAMA_SERVER_CURRENT

PLANNER = Path(__file__).resolve().parents[1] / "phoenix_gui" / "planner"


@pytest.fixture(scope="module")
def rig():
    return load_rig(demo_rig_path())


@pytest.fixture(scope="module")
def m8():
    return preset_model_info("llama-3.1-8b-instruct-q4_k_m")


def test_default_profile_follows_the_backend():
    assert PlanSettings().profile is KOBOLDCPP_1115
    assert PlanSettings(backend="llama-server").profile is LLAMA_SERVER_CURRENT
    assert PlanSettings(backend="llama-server", engine="llama.cpp-old").profile.name == "llama.cpp-old"
    assert PlanSettings().mmap is False and PlanSettings(backend="llama-server").mmap is True
    assert PlanSettings(use_mmap=True).mmap is True  # the user's choice beats the engine's default


def test_engine_of_another_backend_or_unknown_is_refused():
    with pytest.raises(ValueError, match="not a koboldcpp build"):
        PlanSettings(engine="llama-server-current")
    with pytest.raises(ValueError, match="Unknown engine"):
        PlanSettings(engine="koboldcpp-9.99")


def test_era_maps_to_a_profile_of_the_same_backend():
    for backend in ("koboldcpp", "llama-server"):
        old, cur = PROFILES[engine_for(backend, "old")], PROFILES[engine_for(backend, "current")]
        assert old.backend == cur.backend == backend
        assert not old.output_layer_first and cur.output_layer_first


def test_koboldcpp_reserves_logits_for_the_whole_ubatch(rig, m8):
    # koboldcpp 1.115.1 never sets n_outputs_max, so its llama.cpp reserves n_vocab x n_ubatch
    # logits; the llama-server build calibrated here reserves one row
    for backend, full in (("koboldcpp", True), ("llama-server", False)):
        p = make_plan(m8, rig, PlanSettings(context=4096, backend=backend, devices=(1,)))  # all on the RTX 2080
        ci = ComputeInputs(n_ubatch=512, n_kv=p.kv_cells, flash_attn=True, n_outputs=512 if full else 1)
        assert p.gpus[0].has_output and not p.pipeline_parallel
        # a GPU never holds the input layer (the embeddings stay on the CPU)
        assert p.gpus[0].compute_bytes == max(layer_peak(m8, ci, with_input=False), output_peak(m8, ci))
    assert output_peak(m8, dataclasses.replace(ci, n_outputs=512)) > layer_peak(m8, ci)  # the logits decide


def test_the_plan_reads_every_rule_from_the_profile(rig, m8):
    custom = dataclasses.replace(KOBOLDCPP_1115, name="test", context_reserve=0, output_layer_first=False,
                                 process_ram_mib=1000, pipeline_copies=1)
    base = PlanSettings(context=4096, gpulayers=m8.n_layer, tensor_split=(1, 1, 1))
    a, b = make_plan(m8, rig, base), make_plan(m8, rig, base.with_(engine=custom))
    assert (a.kv_cells, b.kv_cells) == (4352, 4096)
    assert a.cpu.has_output is False and b.cpu.has_output is True  # ngl = n_layer: old rule keeps the output on the CPU
    assert b.cpu.overhead_bytes == 1000 << 20


def test_no_planner_formula_asks_which_backend_it_is():
    # engine rules live in engines.py only; settings.py only names the default backend
    for f in PLANNER.glob("*.py"):
        if f.name in ("engines.py", "settings.py"):
            continue
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"backend\s*[!=]=|\"koboldcpp\"|\"llama-server\"|ngl_era|era ==", text), f.name


@pytest.mark.parametrize("era, output_on_cpu", [("old", True), ("current", False)])
def test_cli_era_flag(capsys, era, output_on_cpu):
    # 64 of Qwen-32B's 65 layers: the old rule offloads blocks first and keeps the output layer in RAM
    assert main(["plan", "--demo", "--gpulayers", "64", "--era", era, "--split", "1", "3", "2", "--json"]) in (0, 3)
    d = json.loads(capsys.readouterr().out)
    assert d["devices"][-1]["kind"] == "cpu" and d["devices"][-1]["has_output"] is output_on_cpu
