"""Write a GGUF with a preset's real header and tensor table; the data region is left sparse.

llama.cpp accepts such a file (the holes read as zeros), so a 20 GB model costs a few MB of disk
and can be loaded by the real engine to check Phoenix's memory predictions.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np

from .ggml_types import tensor_bytes
from .info import LayerInfo, ModelInfo, TensorInfo, _LAYER_RE, INPUT_TENSORS, _swa_layers
from .presets import ModelPreset, load_preset, preset_tensors, recipe_file_type

# GPT-2's byte-to-unicode table, so the 256 byte tokens are the ones a gpt2 BPE vocab expects.
def _byte_tokens() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def _tokenizer(w: gguf.GGUFWriter, p: ModelPreset) -> None:
    tokens = _byte_tokens()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    n_fill = p.n_vocab - len(tokens) - len(specials)
    if n_fill < 0:
        raise ValueError("vocabulary too small for a byte-level tokenizer")
    tokens += [f"<fill{i}>" for i in range(n_fill)] + specials
    types = [1] * (len(tokens) - len(specials)) + [3] * len(specials)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(p.tokenizer_pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ Ġ", "Ġ t", "h e"])
    eos = len(tokens) - 3
    w.add_bos_token_id(eos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def _metadata(w: gguf.GGUFWriter, p: ModelPreset) -> None:
    a = p.architecture
    w.add_name(p.name)
    w.add_string("general.size_label", p.size_label)
    w.add_file_type(recipe_file_type(p.recipe))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_uint32(f"{a}.block_count", p.n_layer)
    w.add_uint32(f"{a}.context_length", p.n_ctx_train)
    w.add_uint32(f"{a}.embedding_length", p.n_embd)
    w.add_uint32(f"{a}.feed_forward_length", p.n_ff)
    w.add_uint32(f"{a}.attention.head_count", p.n_head)
    w.add_uint32(f"{a}.attention.head_count_kv", p.n_head_kv)
    w.add_uint32(f"{a}.attention.key_length", p.key_length)
    w.add_uint32(f"{a}.attention.value_length", p.value_length)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", p.rms_eps)
    w.add_float32(f"{a}.rope.freq_base", p.rope_freq_base)
    w.add_uint32(f"{a}.rope.dimension_count", p.key_length)
    w.add_uint32(f"{a}.vocab_size", p.n_vocab)
    if p.n_expert:
        w.add_uint32(f"{a}.expert_count", p.n_expert)
        w.add_uint32(f"{a}.expert_used_count", p.n_expert_used)
        w.add_uint32(f"{a}.expert_feed_forward_length", p.expert_ff)
    if p.sliding_window:
        w.add_uint32(f"{a}.attention.sliding_window", p.sliding_window)


def write_split_model(preset: ModelPreset | str, out: str | Path, max_tensors: int, seed: int = 0) -> list[Path]:
    """A small F16/F32 preset with random weights, split into parts of at most max_tensors tensors
    (named NAME-00001-of-0000N.gguf by the gguf package, as llama.cpp's gguf-split does)."""
    p = load_preset(preset) if isinstance(preset, str) else preset
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(out, p.architecture, split_max_tensors=max_tensors)
    _metadata(w, p)
    _tokenizer(w, p)
    for name, shape, t in preset_tensors(p):
        dtype = np.float32 if t == 0 else np.float16
        arr = (rng.standard_normal(tuple(reversed(shape))) * 0.02).astype(dtype)
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return w.format_shard_names(out)


def write_skeleton(preset: ModelPreset | str, out: str | Path, *, random_data: bool = False, seed: int = 0) -> Path:
    """Write the preset as a GGUF. Sparse data unless random_data (only for F16/F32 models)."""
    p = load_preset(preset) if isinstance(preset, str) else preset
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tensors = preset_tensors(p)
    w = gguf.GGUFWriter(tmp, p.architecture)
    try:
        _metadata(w, p)
        _tokenizer(w, p)
        for name, shape, t in tensors:
            nb = tensor_bytes(t, shape)
            w.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), nb, raw_dtype=gguf.GGMLQuantizationType(t))
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
    finally:
        w.close()
    from .gguf_header import read_header

    h = read_header(tmp)
    sizes = {name: tensor_bytes(t, shape) for name, shape, t in tensors}
    end = max(e.offset + sizes[e.name] for e in h.tensors)
    total = h.data_offset + (end + h.alignment - 1) // h.alignment * h.alignment
    with open(tmp, "r+b") as f:
        f.truncate(total)
        if random_data:
            rng = np.random.default_rng(seed)
            for e in h.tensors:
                if e.ggml_type not in (0, 1):
                    raise ValueError("random data is only written for F32/F16 presets")
                n = sizes[e.name] // (4 if e.ggml_type == 0 else 2)
                arr = (rng.standard_normal(n) * 0.02).astype(np.float32 if e.ggml_type == 0 else np.float16)
                if e.name.endswith("norm.weight"):
                    arr[:] = 1
                f.seek(h.data_offset + e.offset)
                f.write(arr.tobytes())
    os.replace(tmp, out)
    return out


def preset_model_info(preset: ModelPreset | str) -> ModelInfo:
    """A ModelInfo built from a preset alone: the demo mode's model, no file needed."""
    p = load_preset(preset) if isinstance(preset, str) else preset
    layers = [LayerInfo(i) for i in range(p.n_layer)]
    inputs, outputs = [], []
    n_params = 0
    for name, shape, t in preset_tensors(p):
        ti = TensorInfo(name, shape, t, tensor_bytes(t, shape))
        n = 1
        for d in shape:
            n *= d
        n_params += n
        m = _LAYER_RE.match(name)
        if m:
            layers[int(m.group(1))].tensors.append(ti)
        elif name.startswith(INPUT_TENSORS):
            inputs.append(ti)
        else:
            outputs.append(ti)
    total = sum(t.nbytes for t in inputs + outputs) + sum(l.nbytes for l in layers)
    return ModelInfo(
        path=None, parts=[], architecture=p.architecture, name=p.name, size_label=p.size_label,
        file_type=p.recipe, n_layer=p.n_layer, n_embd=p.n_embd, n_head=[p.n_head] * p.n_layer,
        n_head_kv=[p.n_head_kv] * p.n_layer, key_length=p.key_length, value_length=p.value_length,
        n_ff=[p.n_ff] * p.n_layer, n_vocab=p.n_vocab, n_ctx_train=p.n_ctx_train, n_expert=p.n_expert,
        n_expert_used=p.n_expert_used, expert_ff=p.expert_ff, sliding_window=p.sliding_window,
        swa_layers=_swa_layers(None, p.architecture, p.n_layer, p.sliding_window, ""),
        kv_lora_rank=0, q_lora_rank=0, tied_embeddings=p.tied_embeddings, layers=layers,
        input_tensors=inputs, output_tensors=outputs, file_size=total, n_params=n_params,
    )
