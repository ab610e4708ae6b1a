"""Every standard quant of a model from one header: the type llama-quantize gives each tensor, and the
exact size of the file it writes.

The rules are llama.cpp's quantizer's (src/llama-quant.cpp as of koboldcpp 1.115.1 and the llama.cpp
of late 2026), restated: which tensors are quantized at all (2-D and 3-D weights, not norms, not the
expert router), the per-category promotions of each file type (the output and tied embeddings to
Q6_K, attention V and FFN down to more bits on "more bits" layers, first layers, 8-expert models,
grouped-query attention, 70B-class models), and the fallback when a row is not a whole number of
blocks. Tensors are visited in the quantizer's order (by layer, then by name), because some rules
count the attention-V tensors seen so far.

The written file is the source's header (general.file_type and general.quantization_version set,
split keys removed), the same tensor table with new types, and each tensor's data padded to the
alignment; so its size is exact to the byte for a source file. Types that need an importance matrix
(IQ1/IQ2/IQ3_XXS, Q2_K_S) are derived as llama-quantize plans them without one and flagged; with an
imatrix their mix can differ (IQ3_XXS) and the real tool refuses to run without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFileError
from .ggml_types import block_size, tensor_bytes, type_name

# ggml types (gguf's GGMLQuantizationType)
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 0, 1, 2, 3, 6, 7, 8
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = 10, 11, 12, 13, 14
IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ4_NL, IQ3_S, IQ2_S, IQ4_XS, IQ1_M = 16, 17, 18, 19, 20, 21, 22, 23, 29
BF16, TQ1_0, TQ2_0, MXFP4 = 30, 34, 35, 39
_FLOAT = (F32, F16, BF16)


@dataclass(frozen=True)
class Quant:
    """One llama-quantize file type: its name, llama_ftype number, and the type most tensors get."""
    name: str
    ftype: int
    base: int


# the standard file types, smallest first (llama_ftype numbers from llama.h; bases from
# llama_ftype_get_default_type)
QUANTS: tuple[Quant, ...] = (
    Quant("IQ1_S", 24, IQ1_S), Quant("IQ1_M", 31, IQ1_M), Quant("IQ2_XXS", 19, IQ2_XXS), Quant("IQ2_XS", 20, IQ2_XS),
    Quant("IQ2_S", 28, IQ2_XS), Quant("IQ2_M", 29, IQ2_S), Quant("Q2_K_S", 21, Q2_K), Quant("Q2_K", 10, Q2_K),
    Quant("IQ3_XXS", 23, IQ3_XXS), Quant("IQ3_XS", 22, IQ3_S), Quant("IQ3_S", 26, IQ3_S), Quant("Q3_K_S", 11, Q3_K),
    Quant("IQ3_M", 27, IQ3_S), Quant("Q3_K_M", 12, Q3_K), Quant("Q3_K_L", 13, Q3_K), Quant("IQ4_XS", 30, IQ4_XS),
    Quant("IQ4_NL", 25, IQ4_NL), Quant("Q4_0", 2, Q4_0), Quant("Q4_1", 3, Q4_1), Quant("Q4_K_S", 14, Q4_K),
    Quant("Q4_K_M", 15, Q4_K), Quant("MXFP4_MOE", 38, MXFP4), Quant("Q5_0", 8, Q5_0), Quant("Q5_1", 9, Q5_1),
    Quant("Q5_K_S", 16, Q5_K), Quant("Q5_K_M", 17, Q5_K), Quant("Q6_K", 18, Q6_K), Quant("Q8_0", 7, Q8_0),
    Quant("BF16", 32, BF16), Quant("F16", 1, F16),
)
BY_NAME = {q.name: q for q in QUANTS}
# tensor types llama-quantize refuses to write without an importance matrix (tensor_requires_imatrix)
IMATRIX_TYPES = (IQ3_XXS, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_M, IQ1_S)
# a row that is not a whole number of the type's blocks falls back (tensor_type_fallback)
_FALLBACK = {IQ1_S: IQ4_NL, IQ1_M: IQ4_NL, IQ2_XXS: IQ4_NL, IQ2_XS: IQ4_NL, IQ2_S: IQ4_NL, IQ3_XXS: IQ4_NL,
             IQ3_S: IQ4_NL, IQ4_XS: IQ4_NL, Q2_K: Q4_0, Q3_K: Q4_0, TQ1_0: Q4_0, TQ2_0: Q4_0, Q4_K: Q5_0,
             Q5_K: Q5_1, Q6_K: Q8_0}
# architectures whose 80-layer (jais2: 68) grouped-query models llama.cpp types as 70B (a rule below)
_70B = {"llama": 80, "qwen2": 80, "olmo": 80, "deci": 80, "jais2": 68}
_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
                  "shortconv.conv.weight", "attn_rel_b.weight", ".position_embd", ".patch_embd", ".patch_merger",
                  "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
                  "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
                  "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
                  "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
                  "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos")
_LAYER = re.compile(r"^blk\.(\d+)\.")
_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
_U32_KV = 8 + 4  # a u32 entry beyond its key: the key's length prefix and the value type, then 4 bytes
ALIGNMENT = 32


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # ne0 (row length) first
    ggml_type: int


@dataclass
class Source:
    """What the rules and the file size need of a model: its hyperparameters, its tensors (the types they
    have now), and its header's key sizes (empty for a preset: then the size counts tensor data only)."""
    architecture: str
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int
    tensors: list[Tensor]
    kv_bytes: dict[str, int] = field(default_factory=dict)
    alignment: int = ALIGNMENT
    file_type: int | None = None  # general.file_type of the source, when it says


@dataclass
class Derived:
    """One quant of the source: each tensor's type, the file's size, and what to say about it."""
    quant: str
    types: dict[str, int]
    data_bytes: int
    file_bytes: int  # header + data; for a preset (no header) the data alone
    needs_imatrix: bool  # llama-quantize refuses this type without an importance matrix
    fallbacks: int  # tensors whose rows do not fit the wanted type's blocks
    exact: bool = True  # False: the source's own mix is custom, so this is llama-quantize's standard mix of it


# --- the rules ---

def _dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of 1 do not count."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return n


def allows_quantization(t: Tensor) -> bool:
    """tensor_allows_quantization with llama-quantize's default options."""
    if _dims(t.shape) < 2 or not t.name.endswith("weight"):
        return False
    return not any(part in t.name for part in _NOT_QUANTIZED) and t.name not in ("position_embd.weight",
                                                                                 "token_types.weight")


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "qkv"), ("attn_kv_b.weight", "kv_b"), ("attn_v.weight", "v"),
                      ("attn_k.weight", "k"), ("attn_q.weight", "q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _order(t: Tensor) -> tuple[int, str]:
    """The quantizer visits tensors by layer (non-layer tensors first), then by name."""
    m = _LAYER.match(t.name)
    return (int(m.group(1)) if m else -1, t.name)


class _Planner:
    """llama_tensor_get_type for one file type over one model, with the quantizer's counters."""

    def __init__(self, src: Source, q: Quant, imatrix: bool = False):
        self.src, self.q, self.f, self.imatrix = src, q, q.name, imatrix
        cats = [_category(t.name) for t in src.tensors]
        self.n_attn_v = sum(c in ("v", "qkv", "kv_b") for c in cats)
        self.i_attn_v = self.i_down = self.i_gate = self.i_up = 0
        self.tied = "output" not in cats
        self.gqa = src.n_head // max(1, src.n_head_kv) if src.n_head_kv else 1
        self.n_expert = src.n_expert
        self.falcon = src.architecture == "falcon"
        self.is_70b = _70B.get(src.architecture) == src.n_layer and (
            src.architecture != "llama" or src.n_head != src.n_head_kv)
        self.fallbacks = 0

    def _layer(self, counter: int, name: str) -> int:
        if self.n_expert > 1:  # experts are not one tensor per layer: the name says which layer
            m = _LAYER.match(name)
            return int(m.group(1)) if m else counter
        return counter

    def type_of(self, t: Tensor) -> int:
        if not allows_quantization(t):
            return t.ggml_type
        new = self.q.base
        if new in _FLOAT:  # F16/BF16 files: every quantizable weight in that type, no mixture
            return new
        new = self._mixture(t, new, _category(t.name))
        if t.shape[0] % block_size(new):
            self.fallbacks += 1
            new = _FALLBACK.get(new, t.ggml_type)
            if t.shape[0] % block_size(new):
                new = F16
        return new

    def _mixture(self, t: Tensor, new: int, cat: str) -> int:  # llama_tensor_get_type_impl
        f, E, gqa = self.f, self.n_expert, self.gqa
        iq_low = ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M")
        if cat == "output" or (self.tied and cat == "token_embd"):
            if f == "MXFP4_MOE" or self.falcon or t.shape[0] % block_size(new):
                return Q8_0
            if f in iq_low or f == "IQ3_XXS":
                return Q5_K
            return new if new == Q8_0 else Q6_K
        if f == "MXFP4_MOE":
            return MXFP4 if len(t.shape) > 2 and t.shape[2] > 1 else Q8_0
        if cat == "token_embd":
            if f in ("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"):
                return Q2_K
            if f in ("IQ2_S", "IQ2_M", "IQ3_XXS"):
                return IQ3_S
            return new
        if f in iq_low:
            if cat in ("v", "qkv", "kv_b"):
                self.i_attn_v += 1
                return Q4_K if gqa >= 4 or E >= 4 else (IQ3_S if f in ("IQ2_S", "IQ2_M") else Q2_K)
            if E == 8 and cat == "k":
                return Q4_K
            if cat == "ffn_down":
                out = new
                if self.i_down < self.src.n_layer // 8:
                    out = IQ3_S if f in ("IQ2_S", "IQ2_M") else Q2_K
                self.i_down += 1
                return out
            if cat == "attn_output":
                if E == 8:
                    return Q5_K
                if f in ("IQ1_S", "IQ1_M"):
                    return IQ2_XXS
                if f in ("IQ2_S", "IQ2_M"):
                    return IQ3_S
            return new
        if cat in ("v", "qkv", "kv_b"):
            i, n = self.i_attn_v, self.n_attn_v
            if f == "Q2_K":
                new = Q4_K if gqa >= 4 else Q3_K
            elif f == "Q2_K_S" and gqa >= 4:
                new = Q4_K
            elif f == "IQ3_XXS":
                new = Q4_K if gqa >= 4 else (IQ3_XXS if self.imatrix else IQ3_S)
            elif f in ("IQ3_XS", "IQ3_S") and gqa >= 4:
                new = Q4_K
            elif f == "IQ3_M":
                new = Q4_K
            elif f == "Q3_K_M":
                new = Q5_K if i < 2 else Q4_K
            elif f == "Q3_K_L":
                new = Q5_K
            elif f in ("IQ4_NL", "IQ4_XS") and gqa >= 4:
                new = Q5_K
            elif f in ("Q4_K_M", "Q5_K_M") and _more_bits(i, n):
                new = Q6_K
            elif f == "Q4_K_S" and i < 4:
                new = Q5_K
            if self.is_70b and new in (Q3_K, Q4_K):
                new = Q5_K
            if E == 8:
                new = Q8_0
            self.i_attn_v += 1
            return new
        if cat == "k":
            if E == 8:
                return Q8_0
            return IQ3_XXS if f == "IQ3_XS" else IQ2_S if f == "IQ3_XXS" else new
        if cat == "q":
            return IQ3_XXS if f == "IQ3_XS" else IQ2_S if f == "IQ3_XXS" else new
        if cat == "ffn_down":
            i, n = self._layer(self.i_down, t.name), self.src.n_layer
            self.i_down += 1
            if f == "Q2_K":
                return Q3_K
            if f == "Q2_K_S":
                return Q4_K if i < n // 8 else new
            if f == "IQ3_XXS" and not self.imatrix:
                return Q4_K if i < n // 8 else Q3_K
            if f == "Q3_K_M":
                return Q5_K if i < n // 16 else Q4_K if (not self.falcon or _more_bits(i, n)) else Q3_K
            if f == "IQ3_M" and (i < n // 8 or (E == 8 and _more_bits(i, n))):
                return Q4_K
            if f == "Q3_K_L":
                return Q4_K if self.falcon else Q5_K
            if f == "Q4_K_M":
                if self.falcon:
                    return Q6_K if i < n // 16 else Q5_K if _more_bits(i, n) else Q4_K
                return Q6_K if _more_bits(i, n) else new
            if i < n // 8 and f in ("IQ4_NL", "IQ4_XS") and not self.imatrix:
                return Q5_K
            if f == "Q5_K_M" and _more_bits(i, n):
                return Q6_K
            if f == "Q4_K_S" and not self.falcon and i < n // 8:
                return Q5_K
            if f in ("Q4_0", "Q5_0") and self.imatrix and i < n // 8:
                return Q4_1 if f == "Q4_0" else Q5_1
            return new
        if cat == "attn_output":
            if self.falcon:
                return Q4_K if f == "Q3_K_L" else new
            if E == 8:
                return Q5_K if f in ("Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                                     "IQ3_S", "IQ3_M", "IQ4_XS") else new
            return {"Q2_K": Q3_K, "IQ3_XXS": IQ3_S, "Q3_K_M": Q4_K, "Q3_K_L": Q5_K, "IQ3_M": Q4_K}.get(f, new)
        if cat == "qkv":  # unreachable (handled with V above), kept as the quantizer orders it
            return new
        if cat in ("ffn_gate", "ffn_up"):
            counter = self.i_gate if cat == "ffn_gate" else self.i_up
            i, n = self._layer(counter, t.name), self.src.n_layer
            if cat == "ffn_gate":
                self.i_gate += 1
            else:
                self.i_up += 1
            if f == "IQ3_XS" and n // 8 <= i < 7 * n // 8:
                return IQ3_XXS
        return new


# --- whole files ---

def derive(src: Source, quant: str, imatrix: bool = False) -> Derived:
    """llama-quantize's plan for `quant` over this source (its default options)."""
    q = BY_NAME.get(quant)
    if q is None:
        raise ValueError(f"Unknown quant type {quant!r}; known: {', '.join(BY_NAME)}.")
    plan = _Planner(src, q, imatrix)
    types, data = {}, 0
    for t in sorted(src.tensors, key=_order):
        new = plan.type_of(t)
        types[t.name] = new
        data += _padded(tensor_bytes(new, t.shape, f"Tensor {t.name} "), src.alignment)
    needs = q.name == "Q2_K_S" or any(
        ty in IMATRIX_TYPES and n not in ("token_embd.weight", "per_layer_token_embd.weight", "output.weight")
        for n, ty in types.items())
    return Derived(q.name, types, data, _header_bytes(src, q) + data if src.kv_bytes else data, needs and not imatrix,
                   plan.fallbacks)


def every_quant(src: Source) -> list[Derived]:
    """Every standard quant of the source, smallest first; all marked inexact when the source's own
    mix is not one llama-quantize makes (a hand-tuned or "dynamic" quant)."""
    own = own_quant(src)
    exact = own is not None or all(t.ggml_type in _FLOAT for t in src.tensors if allows_quantization(t))
    out = []
    for q in QUANTS:
        if q.name == "MXFP4_MOE" and src.n_expert < 2:
            continue  # experts only
        d = derive(src, q.name)
        d.exact = exact
        out.append(d)
    return out


def own_quant(src: Source) -> str | None:
    """The standard quant whose mix this source is (its file type first), or None for a custom mix."""
    have = {t.name: t.ggml_type for t in src.tensors}
    first = [q for q in QUANTS if q.ftype == src.file_type]
    for q in first + [q for q in QUANTS if q not in first]:
        if derive(src, q.name).types == have:
            return q.name
    return None


def _padded(n: int, align: int) -> int:
    return (n + align - 1) // align * align


def _header_bytes(src: Source, q: Quant) -> int:
    """The written header: the source's keys (split keys gone, file type and quantization version as u32),
    then the tensor table, padded to the alignment (gguf_get_meta_size)."""
    kv = {k: n for k, n in src.kv_bytes.items() if k not in _SPLIT_KEYS}
    for key in ("general.quantization_version", "general.file_type"):
        kv[key] = _U32_KV + len(key.encode()) + 4
    table = sum(8 + len(t.name.encode()) + 4 + 8 * len(t.shape) + 4 + 8 for t in src.tensors)
    return _padded(4 + 4 + 8 + 8 + sum(kv.values()) + table, src.alignment)


# --- sources ---

def source_of_file(path: str | Path) -> Source:
    """A Source from a GGUF model (every part of a split one). Raises ModelFileError in one sentence."""
    from .gguf_header import read_header
    from .info import split_parts

    first = read_header(path)
    tensors = [Tensor(e.name, e.shape, e.ggml_type) for e in first.tensors]
    for part in split_parts(Path(path), first)[1:]:
        tensors += [Tensor(e.name, e.shape, e.ggml_type) for e in read_header(part).tensors]
    meta = first.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ModelFileError(f"{Path(path).name} does not name its architecture.")

    def num(key, default=0):
        v = meta.get(f"{arch}.{key}", default)
        v = v[0] if isinstance(v, list) and v else v  # per-layer arrays: the first layer, as n_gqa(0) reads it
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    n_head = num("attention.head_count", 0)
    ft = meta.get("general.file_type")
    return Source(arch, num("block_count", 0), n_head, num("attention.head_count_kv", n_head), num("expert_count", 0),
                  tensors, dict(first.kv_bytes), first.alignment, ft if isinstance(ft, int) else None)


def file_type_of(name: str) -> int | None:
    """The general.file_type number of a quant name (Q4_K_M -> 15), None for a name Phoenix does not know."""
    q = BY_NAME.get(name)
    return q.ftype if q else None


def describe_types(types: dict[str, int]) -> dict[str, int]:
    """How many tensors of each type: {'Q4_K': 385, ...}, for tables and tests."""
    out: dict[str, int] = {}
    for t in types.values():
        out[type_name(t)] = out.get(type_name(t), 0) + 1
    return out


def requantized(model, d: Derived):
    """The model as the quant `d` would be: each tensor's type and size replaced, no file behind it (a
    derived quant is planned like a preset: tensor offsets unknown). `model` is a ModelInfo."""
    import dataclasses

    def re_t(t):
        new = d.types.get(t.name, t.ggml_type)
        return t if new == t.ggml_type else dataclasses.replace(t, ggml_type=new, nbytes=tensor_bytes(new, t.shape),
                                                               offset=-1)

    layers = [dataclasses.replace(layer, tensors=[re_t(t) for t in layer.tensors]) for layer in model.layers]
    return dataclasses.replace(model, path=None, parts=[], file_type=d.quant, layers=layers,
                               input_tensors=[re_t(t) for t in model.input_tensors],
                               output_tensors=[re_t(t) for t in model.output_tensors], file_size=d.file_bytes)


def source_of_model(model) -> Source:
    """A Source from a ModelInfo: from its file when it has one (header sizes exact), else from its tensors."""
    if model.parts:
        return source_of_file(model.parts[0])
    tensors = [Tensor(t.name, tuple(t.shape), t.ggml_type)
               for t in [*model.input_tensors, *(t for layer in model.layers for t in layer.tensors),
                         *model.output_tensors]]
    heads = model.n_head[0] if model.n_head else 0
    kv = model.n_head_kv[0] if model.n_head_kv else heads
    return Source(model.architecture, model.n_layer, heads, kv, model.n_expert, tensors,
                  file_type=file_type_of(model.file_type))


def _signature(src: Source) -> tuple:
    return src.architecture, tuple(sorted((t.name, t.shape) for t in src.tensors))


def quants_on_disk(path: str | Path, src: Source | None = None, max_files: int = 200) -> dict[str, Path]:
    """The quants of the same model that lie in the folder of `path` (the file itself included): quant name
    -> file (the first part of a split one). Same model = same architecture and the same tensors by name
    and shape; a file whose mix is custom is not any standard quant and is left out. Files that are not
    GGUF models, or not readable, are skipped without a word: the folder is the user's."""
    path = Path(path)
    src = src or source_of_file(path)
    mine = _signature(src)
    out: dict[str, Path] = {}
    split_rest = re.compile(r"-(\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)
    try:
        files = sorted(p for p in path.parent.iterdir() if p.suffix.lower() == ".gguf")[:max_files]
    except OSError:
        return out
    for f in files:
        m = split_rest.search(f.name)
        if m and m.group(1) != "00001":
            continue
        try:
            other = src if f == path else source_of_file(f)
        except (ModelFileError, OSError, ValueError):
            continue
        if _signature(other) != mine:
            continue
        q = own_quant(other)
        if q is not None and q not in out:
            out[q] = f
    return out


def file_name_for(source_name: str, own: str | None, quant: str) -> str:
    """The file name a quant of this model goes by: the source's name with its quant swapped
    ("Qwen2.5-32B-Instruct-Q4_K_M.gguf" -> "...-Q3_K_S.gguf"), or the quant added to the stem."""
    stem = re.sub(r"-\d{5}-of-\d{5}$", "", Path(source_name).stem, flags=re.IGNORECASE)
    for tag in ([own] if own else []) + [q.name for q in QUANTS]:
        m = re.search(rf"(?i)(?<![A-Za-z0-9]){re.escape(tag)}(?![A-Za-z0-9_])", stem)
        if m:
            return f"{stem[:m.start()]}{quant}{stem[m.end():]}.gguf"
    return f"{stem}-{quant}.gguf"
