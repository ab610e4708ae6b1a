"""Model presets: real models described by architecture and quant recipe (phoenix_gui/data/models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf

from ..resources import resource
from ..tomlcompat import tomllib
from .quants import Source, Tensor, derive, file_type_of

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class ModelPreset:
    key: str
    name: str
    architecture: str
    size_label: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_vocab: int
    n_ctx_train: int
    key_length: int
    value_length: int
    recipe: str
    n_expert: int = 0
    n_expert_used: int = 0
    expert_ff: int = 0
    sliding_window: int = 0
    rope_freq_base: float = 10000.0
    rms_eps: float = 1e-6
    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    rope_freqs: bool = False
    tied_embeddings: bool = False
    tokenizer_pre: str = "default"
    published_gb: float | None = None
    extra: dict = field(default_factory=dict)


def preset_dir() -> Path:
    return resource("models")


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.toml"))


def load_preset(key_or_path: str | Path) -> ModelPreset:
    p = Path(key_or_path)
    if p.suffix != ".toml":
        p = preset_dir() / f"{key_or_path}.toml"
    if not p.exists():
        raise ValueError(f"No model preset named {str(key_or_path)!r}; known presets: {', '.join(list_presets())}.")
    data = tomllib.loads(p.read_text(encoding="utf-8"))
    m, q = data["model"], data.get("quant", {})
    n_head = int(m["head_count"])
    head_dim = int(m["embedding_length"]) // n_head
    return ModelPreset(
        key=p.stem, name=m["name"], architecture=m["architecture"], size_label=m.get("size_label", ""),
        n_layer=int(m["block_count"]), n_embd=int(m["embedding_length"]), n_ff=int(m.get("feed_forward_length", 0)),
        n_head=n_head, n_head_kv=int(m.get("head_count_kv", n_head)), n_vocab=int(m["vocab_size"]),
        n_ctx_train=int(m.get("context_length", 4096)),
        key_length=int(m.get("key_length", head_dim)), value_length=int(m.get("value_length", head_dim)),
        recipe=q.get("recipe", "F16"), n_expert=int(m.get("expert_count", 0)),
        n_expert_used=int(m.get("expert_used_count", 0)), expert_ff=int(m.get("expert_feed_forward_length", 0)),
        sliding_window=int(m.get("sliding_window", 0)), rope_freq_base=float(m.get("rope_freq_base", 10000.0)),
        rms_eps=float(m.get("rms_eps", 1e-6)), qkv_bias=bool(m.get("qkv_bias", False)),
        qk_norm=bool(m.get("qk_norm", False)), post_norms=bool(m.get("post_norms", False)),
        rope_freqs=bool(m.get("rope_freqs", False)), tied_embeddings=bool(m.get("tied_embeddings", False)),
        tokenizer_pre=m.get("tokenizer_pre", "default"), published_gb=q.get("published_gb"),
    )


# --- quant recipes: llama-quantize's rules live in quants.py; a preset is an F16 model quantized by them ---

def _source_type(name: str, shape: tuple[int, ...]) -> int:
    """The type a tensor has in the F16 file a quant is made from: 1-D tensors, norms and the router F32."""
    if len(shape) == 1 or "ffn_gate_inp" in name or name.endswith(("_norm.weight", ".bias")):
        return int(Q.F32)
    return int(Q.F16)


def preset_tensors(p: ModelPreset) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, GGUF shape with ne0 first, ggml type) for every tensor of the preset's model."""
    E, V = p.n_embd, p.n_vocab
    qd, kd, vd = p.n_head * p.key_length, p.n_head_kv * p.key_length, p.n_head_kv * p.value_length
    out: list[tuple[str, tuple[int, ...], int]] = []

    def add(name, shape, layer=-1):
        out.append((name, shape, _source_type(name, shape)))

    add("token_embd.weight", (E, V))
    if p.rope_freqs:
        add("rope_freqs.weight", (p.key_length // 2,))
    for il in range(p.n_layer):
        b = f"blk.{il}."
        add(b + "attn_norm.weight", (E,), il)
        add(b + "attn_q.weight", (E, qd), il)
        add(b + "attn_k.weight", (E, kd), il)
        add(b + "attn_v.weight", (E, vd), il)
        if p.qkv_bias:
            add(b + "attn_q.bias", (qd,), il)
            add(b + "attn_k.bias", (kd,), il)
            add(b + "attn_v.bias", (vd,), il)
        if p.qk_norm:
            add(b + "attn_q_norm.weight", (p.key_length,), il)
            add(b + "attn_k_norm.weight", (p.key_length,), il)
        add(b + "attn_output.weight", (qd, E), il)
        if p.post_norms:
            add(b + "post_attention_norm.weight", (E,), il)
        add(b + "ffn_norm.weight", (E,), il)
        if p.n_expert:
            F = p.expert_ff
            add(b + "ffn_gate_inp.weight", (E, p.n_expert), il)
            add(b + "ffn_gate_exps.weight", (E, F, p.n_expert), il)
            add(b + "ffn_up_exps.weight", (E, F, p.n_expert), il)
            add(b + "ffn_down_exps.weight", (F, E, p.n_expert), il)
        else:
            add(b + "ffn_gate.weight", (E, p.n_ff), il)
            add(b + "ffn_up.weight", (E, p.n_ff), il)
            add(b + "ffn_down.weight", (p.n_ff, E), il)
        if p.post_norms:
            add(b + "post_ffw_norm.weight", (E,), il)
    add("output_norm.weight", (E,))
    if not p.tied_embeddings:
        add("output.weight", (E, V))
    if p.recipe in ("F16", "F32"):
        return out
    src = Source(p.architecture, p.n_layer, p.n_head, p.n_head_kv, p.n_expert, [Tensor(*t) for t in out])
    types = derive(src, p.recipe).types
    return [(name, shape, types[name]) for name, shape, _ in out]


def source_of_preset(p: ModelPreset) -> Source:
    """A quant Source from a model preset: tensors exact, no header (sizes are data only)."""
    return Source(p.architecture, p.n_layer, p.n_head, p.n_head_kv, p.n_expert,
                  [Tensor(n, tuple(s), t) for n, s, t in preset_tensors(p)], file_type=file_type_of(p.recipe))


def recipe_file_type(recipe: str) -> int:
    return int(getattr(gguf.LlamaFileType, "MOSTLY_" + recipe if recipe not in ("F16", "BF16") else "MOSTLY_" + recipe))
