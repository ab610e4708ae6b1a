import struct
from collections import Counter

import gguf
import numpy as np
import pytest

from phoenix_gui.model import ModelFileError, load_preset, preset_model_info, read_model, write_skeleton
from phoenix_gui.model.gguf_header import SkippedArray, read_header
from phoenix_gui.model.skeleton import write_split_model


def _compare_with_gguf_reader(path):
    """Our header reader against the gguf package's reader, field by field."""
    ours = read_header(path)
    ref = gguf.GGUFReader(path)
    assert ours.version == 3
    ref_fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert set(ours.metadata) == set(ref_fields)
    for key, f in ref_fields.items():
        v = ours.metadata[key]
        ftype = f.types[0]
        if ftype == gguf.GGUFValueType.ARRAY:
            n = len(f.data)
            if isinstance(v, SkippedArray):
                assert v.length == n and v.element_type == int(f.types[-1]), key
            elif f.types[-1] == gguf.GGUFValueType.STRING:
                assert v == [bytes(f.parts[i]).decode() for i in f.data], key
            else:
                assert v == [f.parts[i].tolist()[0] for i in f.data], key
        elif ftype == gguf.GGUFValueType.STRING:
            assert v == bytes(f.parts[-1]).decode(), key
        else:
            assert v == pytest.approx(f.parts[-1].tolist()[0]), key
    assert len(ours.tensors) == len(ref.tensors)
    for a, b in zip(ours.tensors, ref.tensors):
        assert a.name == b.name
        assert a.shape == tuple(int(x) for x in b.shape)
        assert a.ggml_type == int(b.tensor_type)
        assert ours.data_offset + a.offset == b.data_offset
    return ours, ref


def test_header_reader_matches_gguf_reader_tiny(tmp_path):
    p = write_skeleton("tiny-llama-f16", tmp_path / "tiny.gguf", random_data=True)
    _compare_with_gguf_reader(p)


def test_header_reader_matches_gguf_reader_on_a_big_vocabulary(skeletons):
    ours, ref = _compare_with_gguf_reader(skeletons("qwen2.5-7b-instruct-q4_k_m"))
    assert isinstance(ours.metadata["tokenizer.ggml.tokens"], SkippedArray)
    m = read_model(skeletons("qwen2.5-7b-instruct-q4_k_m"))
    for t, rt in zip(sorted((t for l in m.layers for t in l.tensors), key=lambda t: t.name),
                     sorted((t for t in ref.tensors if t.name.startswith("blk.")), key=lambda t: t.name)):
        assert t.nbytes == int(rt.n_bytes)


def test_model_info_qwen32b(skeletons):
    m = read_model(skeletons("qwen2.5-32b-instruct-q4_k_m"))
    assert (m.architecture, m.n_layer, m.n_embd, m.n_vocab) == ("qwen2", 64, 5120, 152064)
    assert m.n_head == [40] * 64 and m.n_head_kv == [8] * 64 and m.key_length == 128
    assert m.file_type == "Q4_K_M" and not m.tied_embeddings and not m.is_moe
    assert m.n_ff == [27648] * 64 and m.n_ctx_train == 32768
    names = [t.name for l in m.layers for t in l.tensors] + [t.name for t in m.input_tensors + m.output_tensors]
    assert len(names) == 771
    types = Counter(t.type_name for l in m.layers for t in l.tensors)
    types.update(t.type_name for t in m.input_tensors + m.output_tensors)
    assert types == {"Q4_K": 385, "Q6_K": 65, "F32": 321}
    assert m.tensor_bytes == sum(l.nbytes for l in m.layers) + m.input_bytes + m.output_bytes
    assert m.file_size - m.tensor_bytes < 8 << 20  # only the header is not tensor data


def test_qwen32b_skeleton_size_matches_published_and_is_sparse(skeletons):
    p = skeletons("qwen2.5-32b-instruct-q4_k_m")
    size = p.stat().st_size
    assert abs(size / 19.85e9 - 1) < 0.015
    assert p.stat().st_blocks * 512 < 64 << 20  # sparse: a 20 GB model costs a few MB


@pytest.mark.parametrize("key", ["llama-3.1-8b-instruct-q4_k_m", "qwen3-30b-a3b-q4_k_m", "gemma-3-12b-it-q4_k_m",
                                 "qwen2.5-7b-instruct-q4_k_m"])
def test_presets_within_published_size(skeletons, key):
    pr = load_preset(key)
    assert abs(skeletons(key).stat().st_size / 1e9 / pr.published_gb - 1) < 0.015


def test_moe_and_swa_and_tied(skeletons):
    moe = read_model(skeletons("qwen3-30b-a3b-q4_k_m"))
    assert moe.n_expert == 128 and moe.n_expert_used == 8 and moe.is_moe
    assert all(l.expert_bytes > 0.8 * l.nbytes for l in moe.layers)
    g = read_model(skeletons("gemma-3-12b-it-q4_k_m"))
    assert g.tied_embeddings and g.sliding_window == 1024
    assert sum(g.swa_layers) == 40 and not g.swa_layers[5] and g.swa_layers[0]
    assert g.output_bytes > g.token_embd_bytes  # the tied embedding is duplicated onto the output device


def test_preset_model_info_equals_file(skeletons):
    a = preset_model_info("qwen2.5-7b-instruct-q4_k_m")
    b = read_model(skeletons("qwen2.5-7b-instruct-q4_k_m"))
    assert [l.nbytes for l in a.layers] == [l.nbytes for l in b.layers]
    assert a.output_bytes == b.output_bytes and a.input_bytes == b.input_bytes


def test_split_model_any_part_reads_all(tmp_path):
    parts = write_split_model("tiny-llama-f16", tmp_path / "my models" / "tiny.gguf", max_tensors=8)
    assert len(parts) == 3
    whole = write_skeleton("tiny-llama-f16", tmp_path / "whole.gguf", random_data=True)
    ref = read_model(whole)
    for p in parts:
        m = read_model(p)
        assert m.parts == parts
        assert [l.nbytes for l in m.layers] == [l.nbytes for l in ref.layers]
        assert m.n_vocab == ref.n_vocab


def test_missing_split_part_is_named(tmp_path):
    parts = write_split_model("tiny-llama-f16", tmp_path / "tiny.gguf", max_tensors=8)
    parts[1].unlink()
    with pytest.raises(ModelFileError, match="tiny-00002-of-00003.gguf"):
        read_model(parts[0])


def test_path_with_spaces_and_non_ascii(tmp_path):
    d = tmp_path / "Modèles für KI" / "日本語 フォルダ"
    p = write_skeleton("tiny-llama-f16", d / "tiny model ü.gguf")
    assert read_model(p).n_layer == 2


def _bad(tmp_path, data: bytes):
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("data,words", [
    (b"", "not a GGUF"),
    (b"PK\x03\x04" + b"\0" * 100, "not a GGUF"),
    (b"GGUF" + struct.pack("<I", 99) + b"\0" * 32, "version 99"),
    (b"GGUF" + struct.pack("<I", 1) + b"\0" * 32, "version 1"),
    (b"GGUF" + struct.pack("<IQQ", 3, 2**40, 1) + b"\0" * 16, "absurd counts"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**50) + b"x", "corrupt header"),
])
def test_bad_files_raise_one_sentence(tmp_path, data, words):
    with pytest.raises(ModelFileError, match=words) as e:
        read_model(_bad(tmp_path, data))
    assert "\n" not in str(e.value)


def test_truncated_model(skeletons, tmp_path):
    src = skeletons("qwen2.5-7b-instruct-q4_k_m")
    with open(src, "rb") as f:
        head = f.read(3 << 20)
    for n in (100, 5000, 1 << 20, 3 << 20):
        with pytest.raises(ModelFileError, match="truncated"):
            read_model(_bad(tmp_path, head[:n]))


def test_unknown_architecture(tmp_path):
    w = gguf.GGUFWriter(tmp_path / "x.gguf", "not-a-real-arch")
    w.add_uint32("not-a-real-arch.block_count", 2)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFileError, match="architecture 'not-a-real-arch'"):
        read_model(tmp_path / "x.gguf")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        read_model(tmp_path / "nope.gguf")
    with pytest.raises(ModelFileError, match="folder"):
        read_model(tmp_path)


def test_header_only_file_is_truncated(tmp_path):
    p = write_skeleton("tiny-llama-f16", tmp_path / "t.gguf")
    h = read_header(p)
    with open(p, "r+b") as f:
        f.truncate(h.data_offset + 16)
    with pytest.raises(ModelFileError, match="truncated"):
        read_model(p)


def test_reader_never_reads_tensor_data(tmp_path, monkeypatch):
    """Opening a 20 GB model reads a few MB: the header, never the data region."""
    import builtins

    p = write_skeleton("qwen2.5-32b-instruct-q4_k_m", tmp_path / "q32.gguf")
    h = read_header(p)
    read_total = 0
    real_open = builtins.open

    class Counting:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            nonlocal read_total
            b = self.f.read(n)
            read_total += len(b)
            return b

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    read_model(p)
    assert read_total <= h.data_offset + (4 << 20)
