"""A slice of a model (its first k layers, model/slice.py): planned the same whether built from the model
or read back from the file written, the file a hole behind the model's own metadata, and both real
engines load it and generate."""

import pytest

from phoenix_gui.backends.lifecycle import LaunchMachine
from phoenix_gui.backends.processes.ports import free_port
from phoenix_gui.hardware import demo_rig_path, load_rig
from phoenix_gui.hardware.rig import GIB, Rig, SystemInfo
from phoenix_gui.model import ModelFileError, preset_model_info, read_model, write_skeleton
from phoenix_gui.model.gguf_header import read_header
from phoenix_gui.model.slice import slice_info, write_slice
from phoenix_gui.planner import PlanSettings, make_plan
from machine_helpers import ready


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("slices")
    return {key: read_model(write_skeleton(key, d / f"{key}.gguf"))
            for key in ("qwen2.5-7b-instruct-q4_k_m", "gemma-3-12b-it-q4_k_m")}


@pytest.mark.parametrize("key", ["qwen2.5-7b-instruct-q4_k_m", "gemma-3-12b-it-q4_k_m"])
def test_the_file_reads_back_as_the_slice_the_planner_plans(models, key, tmp_path):
    model = models[key]
    path = write_slice(model, 5, tmp_path / "first five.gguf")
    got, want = read_model(path), slice_info(model, 5)
    assert got.n_layer == want.n_layer == 5 and got.architecture == model.architecture
    assert [layer.nbytes for layer in got.layers] == [layer.nbytes for layer in model.layers[:5]]
    assert got.swa_layers == model.swa_layers[:5] and got.n_head_kv == model.n_head_kv[:5]  # per-layer arrays cut
    assert got.n_vocab == model.n_vocab and got.output_bytes == model.output_bytes and got.n_params == want.n_params
    rig = load_rig(demo_rig_path())
    for s in (PlanSettings(context=512, devices=(1,), gpulayers=6, tensor_split=(6.0,)),
              PlanSettings(context=512, devices=(), gpulayers=0)):
        a, b = make_plan(got, rig, s), make_plan(want, rig, s)
        assert a.predicted_tokens_per_s == b.predicted_tokens_per_s
        assert [d.total_bytes for d in a.gpus] == [d.total_bytes for d in b.gpus]
    # the data is a hole: the file takes the header's blocks, not the layers'
    assert path.stat().st_size >= sum(layer.nbytes for layer in got.layers)
    assert path.stat().st_blocks * 512 < read_header(path).data_offset + (1 << 20)


def test_what_cannot_be_sliced(models, tmp_path):
    model = models["qwen2.5-7b-instruct-q4_k_m"]
    for k in (0, model.n_layer + 1):
        with pytest.raises(ValueError, match="a slice of 1 to 28 layers"):
            slice_info(model, k)
    with pytest.raises(ValueError, match="only a model read from a file"):
        write_slice(preset_model_info("qwen2.5-7b-instruct-q4_k_m"), 2, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def cpu_rig() -> Rig:
    return Rig("this PC", [], SystemInfo(64 * GIB, 60 * GIB, 2, 2, 20.0, "table"))


@pytest.mark.engine
@pytest.mark.parametrize("engine", ["llama-server", "koboldcpp"])
def test_the_real_engines_load_a_slice_and_generate(models, engine, kcpp_script, tmp_path):
    model = models["gemma-3-12b-it-q4_k_m"]  # sliding-window layers: their per-layer pattern is cut too
    path = write_slice(model, 2, tmp_path / "first two.gguf")
    sliced = read_model(path)
    plan = make_plan(sliced, cpu_rig(), PlanSettings(context=512, batch=64, threads=2, port=free_port(), backend=engine))
    exe = str(kcpp_script) if engine == "koboldcpp" else None
    m = LaunchMachine(plan, cpu_rig(), sliced, str(path), exe=exe, log_dir=tmp_path)
    with ready(m) as la:
        gen = la.backend.generate(la.host, la.port, "Hello there", 6, 512)
        assert gen.gen_tokens == 6 and gen.gen_tokens_per_s > 0
        host = next(c for c in m.outcome.comparison if c.name == "CPU / RAM")
        assert host.actual_bytes is not None and abs(host.actual_bytes - host.predicted_bytes) < 0.1 * host.predicted_bytes


def test_a_model_file_damaged_since_it_was_read_is_one_sentence(models, tmp_path):
    import shutil

    src = models["qwen2.5-7b-instruct-q4_k_m"]
    copy = tmp_path / "copy.gguf"
    shutil.copy(src.parts[0], copy)
    model = read_model(copy)
    with open(copy, "r+b") as f:
        f.truncate(4096)  # the header cut off in the middle of its keys
    with pytest.raises((ValueError, ModelFileError), match=r"^copy\.gguf (is truncated or corrupt|changed or is damaged)"):
        write_slice(model, 2, tmp_path / "slice.gguf")
    assert not (tmp_path / "slice.gguf").exists()
