"""ModelInfo: everything the planner needs from a GGUF model, without its tensor data."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import gguf

from .errors import ModelFileError
from .ggml_types import tensor_bytes, type_name
from .gguf_header import GGUFHeader, SkippedArray, read_header

KNOWN_ARCHS = frozenset(gguf.MODEL_ARCH_NAMES.values())
_FILE_TYPES = {int(t): t.name.removeprefix("MOSTLY_") for t in gguf.LlamaFileType}
_SPLIT_RE = re.compile(r"^(?P<stem>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
# Tensors of the input layer stay on the CPU; everything else outside blk.N goes with the output.
INPUT_TENSORS = ("token_embd.", "token_embd_norm.", "token_types.", "position_embd.", "per_layer_token_embd.")
# llama.cpp's default sliding-window pattern by architecture when the GGUF does not store one:
# every n-th layer is global, the others use the window.
SWA_PATTERN_DEFAULTS = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2, "exaone4": 4}
MAX_LAYERS = 4096
MAX_WIDTH = 1 << 20


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    nbytes: int
    # where the data starts in its file (the data section's start + the tensor's offset) and which part
    # of a split model holds it; -1 when the tensor comes from a preset, not a file. With mmap the
    # engine maps the span of the file between the host's first and last tensor, so this decides what
    # it logs as CPU_Mapped (planner/placement.py host_mapped_span)
    offset: int = -1
    part: int = 0

    @property
    def type_name(self) -> str:
        return type_name(self.ggml_type)

    @property
    def is_expert(self) -> bool:
        return "_exps." in self.name or "_chexps." in self.name


@dataclass
class LayerInfo:
    index: int
    tensors: list[TensorInfo] = field(default_factory=list)

    # Cached: the planner reads these on every slider move; a layer's tensors never change
    # after the model is read.
    @cached_property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @cached_property
    def expert_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.is_expert)

    @cached_property
    def dense_bytes(self) -> int:
        return self.nbytes - self.expert_bytes

    @cached_property
    def _largest(self) -> tuple[int, int]:
        mats = [t for t in self.tensors if len(t.shape) >= 2]
        return (max((t.nbytes for t in mats), default=0), max((t.nbytes for t in mats if t.is_expert), default=0))

    def largest_matrix(self, experts_only: bool = False) -> int:
        return self._largest[1] if experts_only else self._largest[0]


@dataclass
class ModelInfo:
    path: Path | None
    parts: list[Path]
    architecture: str
    name: str
    size_label: str
    file_type: str
    n_layer: int
    n_embd: int
    n_head: list[int]
    n_head_kv: list[int]
    key_length: int
    value_length: int
    n_ff: list[int]
    n_vocab: int
    n_ctx_train: int
    n_expert: int
    n_expert_used: int
    expert_ff: int
    sliding_window: int
    swa_layers: list[bool]
    kv_lora_rank: int
    q_lora_rank: int
    tied_embeddings: bool
    layers: list[LayerInfo]
    input_tensors: list[TensorInfo]
    output_tensors: list[TensorInfo]
    file_size: int
    n_params: int

    # --- byte totals the planner and UI use ---
    @property
    def input_bytes(self) -> int:
        return sum(t.nbytes for t in self.input_tensors)

    @property
    def output_bytes(self) -> int:
        """Bytes of the output layer; with tied embeddings llama.cpp duplicates token_embd there."""
        own = sum(t.nbytes for t in self.output_tensors)
        if self.tied_embeddings:
            own += self.token_embd_bytes
        return own

    @property
    def token_embd_bytes(self) -> int:
        return sum(t.nbytes for t in self.input_tensors if t.name == "token_embd.weight")

    @property
    def tensor_bytes(self) -> int:
        return self.input_bytes + sum(t.nbytes for t in self.output_tensors) + sum(l.nbytes for l in self.layers)

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    @property
    def has_kv(self) -> list[bool]:
        return [h > 0 for h in self.n_head_kv]

    def summary(self) -> dict:
        return {
            "path": str(self.path) if self.path else None,
            "parts": [str(p) for p in self.parts],
            "architecture": self.architecture,
            "name": self.name,
            "size_label": self.size_label,
            "file_type": self.file_type,
            "n_params": self.n_params,
            "n_layer": self.n_layer,
            "n_embd": self.n_embd,
            "n_head": self.n_head[0] if len(set(self.n_head)) == 1 else self.n_head,
            "n_head_kv": self.n_head_kv[0] if len(set(self.n_head_kv)) == 1 else self.n_head_kv,
            "key_length": self.key_length,
            "value_length": self.value_length,
            "n_ff": self.n_ff[0] if len(set(self.n_ff)) == 1 else self.n_ff,
            "n_vocab": self.n_vocab,
            "n_ctx_train": self.n_ctx_train,
            "n_expert": self.n_expert,
            "n_expert_used": self.n_expert_used,
            "sliding_window": self.sliding_window,
            "swa_layer_count": sum(self.swa_layers),
            "kv_lora_rank": self.kv_lora_rank,
            "q_lora_rank": self.q_lora_rank,
            "tied_embeddings": self.tied_embeddings,
            "file_size": self.file_size,
            "tensor_bytes": self.tensor_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "layer_bytes": [l.nbytes for l in self.layers],
            "layer_expert_bytes": [l.expert_bytes for l in self.layers],
        }


def split_parts(path: Path, header: GGUFHeader) -> list[Path]:
    """All parts of a split model, checking that each exists."""
    count = header.metadata.get("split.count")
    m = _SPLIT_RE.match(path.name)
    if not m and not count:
        return [path]
    if m:
        stem, total = m.group("stem"), int(m.group("count"))
    else:
        raise ModelFileError(f"{path.name} is one part of a split model, but its name does not say which parts belong with it.")
    if isinstance(count, int) and count != total:
        raise ModelFileError(f"{path.name} says the model has {count} parts but its name says {total}.")
    if not 1 <= total <= 9999:
        raise ModelFileError(f"{path.name} has an impossible part count ({total}).")
    parts = [path.with_name(f"{stem}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)]
    for p in parts:
        if not p.exists():
            raise ModelFileError(f"Part {p.name} of this split model is missing from {p.parent}.")
    return parts


def _int(meta: dict, key: str, default=None, *, where: str):
    v = meta.get(key, default)
    if v is None:
        raise ModelFileError(f"{where}lacks the required key {key}.")
    if isinstance(v, SkippedArray):
        raise ModelFileError(f"{where}has an absurd value for {key}.")
    if isinstance(v, bool) or not isinstance(v, (int, list)):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise ModelFileError(f"{where}has a non-integer value for {key}.")
    return v


def _per_layer(v, n_layer: int, key: str, where: str) -> list[int]:
    if isinstance(v, list):
        if len(v) != n_layer or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ModelFileError(f"{where}has a per-layer {key} of the wrong length.")
        return [int(x) for x in v]
    return [int(v)] * n_layer


def _check_range(value: int, lo: int, hi: int, what: str, where: str) -> int:
    if not lo <= value <= hi:
        raise ModelFileError(f"{where}has an absurd {what} ({value}).")
    return value


def read_model(path: str | Path) -> ModelInfo:
    """Read a GGUF model (all parts of a split one) into a ModelInfo. Raises ModelFileError."""
    path = Path(path)
    first = read_header(path)
    parts = split_parts(path, first)
    headers = [first if p == path else read_header(p) for p in parts]
    head0 = headers[0]
    where = f"{parts[0].name} "
    meta = head0.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(f"{where}does not say which architecture it is.")
    if arch not in KNOWN_ARCHS:
        raise ModelFileError(f"{where}uses the architecture {arch!r}, which Phoenix does not know.")
    if arch == "clip" or meta.get("general.type") == "mmproj":
        raise ModelFileError(f"{where}is a vision projector (mmproj), not a language model.")

    tensors: list[TensorInfo] = []
    file_size = 0
    for part, h in enumerate(headers):
        file_size += h.file_size
        end_of_data = 0
        for t in h.tensors:
            nb = tensor_bytes(t.ggml_type, t.shape, where)
            if t.offset % h.alignment:
                raise ModelFileError(f"{h.path.name} has a corrupt header (tensor {t.name!r} is misaligned).")
            end_of_data = max(end_of_data, t.offset + nb)
            tensors.append(TensorInfo(t.name, t.shape, t.ggml_type, nb, h.data_offset + t.offset, part))
        if h.data_offset + end_of_data > h.file_size:
            raise ModelFileError(f"{h.path.name} is truncated: it is smaller than its tensors need.")
    if not tensors:
        raise ModelFileError(f"{where}contains no tensors.")

    k = lambda s: f"{arch}.{s}"  # noqa: E731
    n_layer = _check_range(_int(meta, k("block_count"), where=where), 1, MAX_LAYERS, "layer count", where)
    n_embd = _check_range(_int(meta, k("embedding_length"), where=where), 1, MAX_WIDTH, "embedding width", where)
    n_head = _per_layer(_int(meta, k("attention.head_count"), 0, where=where), n_layer, "head count", where)
    n_head_kv = _per_layer(_int(meta, k("attention.head_count_kv"), n_head, where=where), n_layer, "KV head count", where)
    for v in n_head + n_head_kv:
        _check_range(v, 0, 65536, "head count", where)
    max_head = max(n_head) or 1
    key_length = _check_range(_int(meta, k("attention.key_length"), n_embd // max_head, where=where), 0, MAX_WIDTH, "key length", where)
    value_length = _check_range(_int(meta, k("attention.value_length"), n_embd // max_head, where=where), 0, MAX_WIDTH, "value length", where)
    n_ff = _per_layer(_int(meta, k("feed_forward_length"), 0, where=where), n_layer, "feed-forward width", where)
    n_expert = _check_range(_int(meta, k("expert_count"), 0, where=where), 0, 65536, "expert count", where)
    n_expert_used = _check_range(_int(meta, k("expert_used_count"), 0, where=where), 0, max(n_expert, 0), "used-expert count", where)
    expert_ff = _int(meta, k("expert_feed_forward_length"), 0, where=where)
    n_ctx_train = _check_range(_int(meta, k("context_length"), 0, where=where), 0, 1 << 26, "training context", where)
    sliding_window = _int(meta, k("attention.sliding_window"), 0, where=where)
    if isinstance(sliding_window, list):
        raise ModelFileError(f"{where}has a malformed sliding window.")
    swa_layers = _swa_layers(meta.get(k("attention.sliding_window_pattern")), arch, n_layer, sliding_window, where)
    kv_lora_rank = _int(meta, k("attention.kv_lora_rank"), 0, where=where)
    q_lora_rank = _int(meta, k("attention.q_lora_rank"), 0, where=where)

    layers = [LayerInfo(i) for i in range(n_layer)]
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    for t in tensors:
        m = _LAYER_RE.match(t.name)
        if m:
            il = int(m.group(1))
            if il >= n_layer:
                # MTP/NextN blocks beyond block_count are not loaded for inference by default.
                outputs.append(t)
                continue
            layers[il].tensors.append(t)
        elif t.name.startswith(INPUT_TENSORS):
            inputs.append(t)
        else:
            outputs.append(t)
    names = {t.name for t in tensors}
    tied = "output.weight" not in names and "token_embd.weight" in names

    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, SkippedArray):
        n_vocab = tokens.length
    elif isinstance(tokens, list):
        n_vocab = len(tokens)
    else:
        n_vocab = int(meta.get(k("vocab_size"), 0) or 0)
    if not n_vocab:
        emb = next((t for t in tensors if t.name in ("token_embd.weight", "output.weight")), None)
        n_vocab = emb.shape[1] if emb and len(emb.shape) > 1 else 0

    ft = meta.get("general.file_type")
    file_type = _FILE_TYPES.get(ft, "unknown") if isinstance(ft, int) else _guess_file_type(tensors)
    n_params = params_of(tensors)
    return ModelInfo(
        path=path, parts=parts, architecture=arch,
        name=str(meta.get("general.name", "") or parts[0].stem),
        size_label=str(meta.get("general.size_label", "") or ""),
        file_type=file_type, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        key_length=key_length, value_length=value_length, n_ff=n_ff, n_vocab=n_vocab,
        n_ctx_train=n_ctx_train, n_expert=n_expert, n_expert_used=n_expert_used,
        expert_ff=expert_ff if isinstance(expert_ff, int) else 0,
        sliding_window=sliding_window, swa_layers=swa_layers, kv_lora_rank=kv_lora_rank if isinstance(kv_lora_rank, int) else 0,
        q_lora_rank=q_lora_rank if isinstance(q_lora_rank, int) else 0, tied_embeddings=tied,
        layers=layers, input_tensors=inputs, output_tensors=outputs, file_size=file_size, n_params=n_params,
    )


def params_of(tensors) -> int:
    """The number of weights in these tensors."""
    total = 0
    for t in tensors:
        n = 1
        for d in t.shape:
            n *= d
        total += n
    return total


def _swa_layers(pattern, arch: str, n_layer: int, window: int, where: str) -> list[bool]:
    if not window:
        return [False] * n_layer
    if isinstance(pattern, list):
        if len(pattern) != n_layer:
            raise ModelFileError(f"{where}has a sliding-window pattern of the wrong length.")
        return [bool(x) for x in pattern]
    n = pattern if isinstance(pattern, int) and not isinstance(pattern, bool) else SWA_PATTERN_DEFAULTS.get(arch, 0)
    if n <= 0:
        return [True] * n_layer if n == 0 and arch not in SWA_PATTERN_DEFAULTS else [False] * n_layer
    return [(il % n) < (n - 1) for il in range(n_layer)]


def _guess_file_type(tensors: list[TensorInfo]) -> str:
    from collections import Counter

    c = Counter(t.type_name for t in tensors if len(t.shape) >= 2)
    return c.most_common(1)[0][0] if c else "unknown"
