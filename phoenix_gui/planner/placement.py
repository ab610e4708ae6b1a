"""Which device each layer lands on, following llama.cpp's layer-split rules.

Layer index n_layer stands for the output layer (output.weight + output_norm); the input
embeddings always stay on the CPU.
"""

from __future__ import annotations

import math
import re
import weakref
from bisect import bisect_right

from ..model.ggml_types import block_size, tensor_bytes
from ..validate import split_weights

CPU = -1


def normalise_split(weights: list[float], n_devices: int) -> list[float]:
    """Cumulative split boundaries (cum[last] == 1), llama.cpp style; missing entries count as 0."""
    w = [float(x) if 0 < x < math.inf else 0.0 for x in list(weights)[:n_devices]]
    w += [0.0] * (n_devices - len(w))
    total = sum(w)
    if total == math.inf:  # finite weights whose sum is not (1e308 x 3): only their ratios matter
        top = max(w)
        w = [x / top for x in w]
        total = sum(w)
    if total <= 0:
        w = [1.0] * n_devices
        total = float(n_devices)
    cum, acc = [], 0.0
    for x in w:
        acc += x
        cum.append(acc / total)
    return cum


def offload_range(n_layer: int, ngl: int, n_devices: int, output_layer_first: bool = True) -> tuple[int, int]:
    """(first offloaded layer index, number offloaded) of the n_layer + 1 offloadable layers.
    output_layer_first: the engine profile's n_gpu_layers rule (False: builds before Dec 2025)."""
    ngl = max(0, ngl)
    if output_layer_first:
        start = max(n_layer + 1 - ngl, 0)
    else:
        start = max(n_layer - ngl, 0)
    act = 0 if n_devices == 0 else min(ngl, n_layer + 1)
    return start, act


def plan_layers(n_layer: int, ngl: int, split: list[float], output_layer_first: bool = True) -> list[int]:
    """Device index (into the split's device list) for layers 0..n_layer; CPU = -1."""
    n_dev = len(split)
    start, act = offload_range(n_layer, ngl, n_dev, output_layer_first)
    out = [CPU] * (n_layer + 1)
    if act == 0:
        return out
    cum = normalise_split(split, n_dev)
    for il in range(start, n_layer + 1):
        if il - start >= act:
            break
        x = (il - start) / act
        # upper_bound: the first device whose cumulative share exceeds x
        d = bisect_right(cum, x)
        out[il] = min(d, n_dev - 1)
    if not output_layer_first and ngl <= n_layer:
        out[n_layer] = CPU  # the old rule offloads the output layer only when ngl > n_layer
    return out


def layer_counts(assign: list[int], n_devices: int) -> list[int]:
    counts = [0] * n_devices
    for d in assign:
        if d >= 0:
            counts[d] += 1
    return counts


def exact_split(counts: list[int]) -> list[float]:
    """A tensor split of integer layer counts gives each device exactly that many layers."""
    return [float(c) for c in counts]


# --- tensor overrides (-ot REGEX=BUFT, koboldcpp --overridetensors; --moecpu is a special case) ---

_BUFT = re.compile(r"^(?:CUDA|Vulkan|RPC)(\d+)(?:\[[^\]]*\])?$")


def override_device(buft: str) -> int | None:
    """The device an override's buffer type names: CPU, or the n-th GPU of the plan ("CUDA1" -> 1; an
    RPC device "RPC0[host:port]" -> 0). None: not a buffer type Phoenix knows."""
    if buft == "CPU":
        return CPU
    m = _BUFT.match(buft)
    return int(m.group(1)) if m else None


def moecpu_overrides(moecpu: int) -> list[tuple[str, str]]:
    """--moecpu N / --n-cpu-moe N as the overrides the engines add after the user's own."""
    return [(rf"blk\.{i}\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU") for i in range(moecpu)]


def experts_in_ram_overrides(blocks) -> tuple[tuple[str, str], ...]:
    """The experts of these blocks in RAM, every other tensor where the layer split puts it: one override
    whose pattern names the blocks as a regex alternation (koboldcpp splits --overridetensors at commas, so
    one pattern per block would not survive its parser)."""
    blocks = sorted(set(int(b) for b in blocks))
    if not blocks:
        return ()
    return ((rf"blk\.({'|'.join(map(str, blocks))})\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU"),)


_EXPERT_BLOCKS = re.compile(r"^blk\\\.\(([0-9|]+)\)\\\.ffn_\(up\|down\|gate\|gate_up\)_\(ch\|\)exps$")


def experts_in_ram_blocks(overrides) -> list[int]:
    """The blocks whose experts experts_in_ram_overrides keeps in RAM ([] for any other overrides)."""
    if len(overrides) != 1 or overrides[0][1] != "CPU":
        return []
    m = _EXPERT_BLOCKS.match(overrides[0][0])
    return [int(b) for b in m.group(1).split("|")] if m else []


def _compiled(overrides) -> list[tuple[re.Pattern, int | None]]:
    return [(re.compile(rx), override_device(buft)) for rx, buft in overrides]


def _override_of(pats, name: str) -> int | None:
    """The device the first matching pattern names (llama.cpp: regex_search, first match wins)."""
    return next((d for rx, d in pats if rx.search(name)), None)


def tensor_moves(model, assign: list[int], overrides) -> tuple[list[dict[int, int]], int]:
    """Per layer (index n_layer = the output layer): bytes of the tensors an override sends away from
    the layer's own device, by destination; and the largest matrix sent to the CPU (the first GPU copies
    it for a big-batch matmul). llama.cpp tries the patterns in order with regex_search and the first
    match wins; a tensor matched to its own layer's device stays."""
    moves: list[dict[int, int]] = []
    largest = 0
    for il, matched in enumerate(_matched(model, overrides)):
        out: dict[int, int] = {}
        for dest, nbytes, matrix in matched:
            if dest != assign[il]:
                out[dest] = out.get(dest, 0) + nbytes
                if dest == CPU and matrix:
                    largest = max(largest, nbytes)
        moves.append(out)
    return moves, largest


def _per_model(store: dict, model, overrides, build):
    """build(model, compiled patterns) once per model and override list. Auto-fit plans one model under the
    same few override lists hundreds of times, and matching every tensor name against every pattern was most
    of a plan's time (an MoE model with --moecpu N). Keyed by the model's id, checked against the model itself
    (an id can be reused once a model is gone); at most 256 entries."""
    key = (id(model), tuple(tuple(o) for o in overrides))
    got = store.get(key)
    if got is not None and got[0] is model:
        return got[1]
    out = build(model, _compiled(overrides))
    if len(store) >= 256:
        store.clear()
    store[key] = (model, out)
    return out


def _groups(model) -> list:
    return [layer.tensors for layer in model.layers] + [model.output_tensors]


_MATCHED: dict[tuple, tuple] = {}


def _matched(model, overrides) -> list[list[tuple[int, int, bool]]]:
    """Per layer group, the tensors the overrides name: (device, bytes, is a matrix)."""
    return _per_model(_MATCHED, model, overrides, lambda m, pats: [
        [(d, t.nbytes, len(t.shape) > 1) for t in tensors if (d := _override_of(pats, t.name)) is not None]
        for tensors in _groups(m)])


# --- the host's weights, buffer by buffer (what the engine logs as CPU_Mapped, CPU, CPU_REPACK) ---

# tensors read by row lookup (GET_ROWS), never by a matmul: the CPU's repacked layouts cannot serve them
_LOOKUP = ("token_embd.", "per_layer_token_embd.", "position_embd.", "token_types.")


_HOST_SPLIT: dict[tuple, tuple] = {}


def _host_split(model, overrides) -> list[tuple[list, list]]:
    """Per layer group: (the tensors in RAM when the layer is on the CPU, those in RAM when it is not)."""

    def build(m, pats):
        split = []
        for tensors in _groups(m):
            on_cpu, elsewhere = [], []
            for t in tensors:
                dest = _override_of(pats, t.name) if pats else None
                if dest is None or dest == CPU:
                    on_cpu.append(t)
                if dest == CPU:
                    elsewhere.append(t)
            split.append((on_cpu, elsewhere))
        return split

    return _per_model(_HOST_SPLIT, model, overrides, build)


def host_tensors(model, assign: list[int], overrides=()) -> list:
    """The weights that stay in RAM: the input layer, the blocks (and output layer) the layer rule puts on
    the CPU, and whatever an override sends there, less what an override sends away (first match wins)."""
    out = list(model.input_tensors)
    for il, (on_cpu, elsewhere) in enumerate(_host_split(model, overrides)):
        out.extend(on_cpu if assign[il] == CPU else elsewhere)
    return out


def mapped_span(tensors) -> int:
    """Bytes of the file the engine maps for these tensors: per file (part of a split model), from the
    first byte of the first tensor to the last byte of the last one, other devices' tensors in between
    included (llama.cpp maps one range per file and buffer type and logs its length as CPU_Mapped).
    A tensor without a known file offset (a preset, no file) counts its own bytes."""
    spans: dict[int, tuple[int, int]] = {}
    loose = 0
    for t in tensors:
        if t.offset < 0:
            loose += t.nbytes
            continue
        lo, hi = spans.get(t.part, (t.offset, t.offset + t.nbytes))
        spans[t.part] = (min(lo, t.offset), max(hi, t.offset + t.nbytes))
    return loose + sum(hi - lo for lo, hi in spans.values())


def repackable(t, types: frozenset[int]) -> bool:
    """A weight the CPU backend re-lays out for its own matmul kernels (ggml-cpu's extra buffer type,
    logged as CPU_REPACK): a matmul weight (2-D, or 3-D stacked experts) of a type it repacks on this CPU,
    with a row count that is a multiple of the 8-row interleave."""
    return (t.ggml_type in types and len(t.shape) in (2, 3) and t.shape[1] % 8 == 0
            and not t.name.startswith(_LOOKUP))


def host_model_buffers(tensors, *, mmap: bool, repack_types: frozenset[int] = frozenset(),
                       plain: str = "CPU") -> dict[str, int]:
    """The host's model buffers as the engine logs them, by buffer name. Repacked weights live in their
    own buffer (the same bytes, re-laid out); the rest is mapped from the file (CPU_Mapped: the span, see
    mapped_span) or, without mmap, copied into the plain host buffer: `plain`, which is "CUDA_Host" (the
    first local GPU's pinned memory) when the plan has one. With mmap, the repacked copies come on top of
    the mapped span: the file's pages stay mapped while the copies are anonymous RAM."""
    packed, rest = 0, tensors
    if repack_types:  # one pass; most plans repack nothing (koboldcpp with mmap, llama-server on a GPU)
        rest = []
        for t in tensors:
            if repackable(t, repack_types):
                packed += t.nbytes
            else:
                rest.append(t)
    out = {"CPU_Mapped": mapped_span(rest)} if mmap else {plain: sum(t.nbytes for t in rest)}
    if packed:
        out["CPU_REPACK"] = packed
    return {k: v for k, v in out.items() if v}


def gpu_tensor_bytes(t, row_padding: int, align: int) -> int:
    """Bytes a weight takes in a CUDA buffer (EngineProfile.gpu_row_padding, gpu_tensor_align): a quantized
    matrix whose rows are not a multiple of row_padding elements gets the bytes of the missing elements once
    more (ggml's row size of them: type size x elements / block size), and every tensor is aligned."""
    n = t.nbytes
    block = block_size(t.ggml_type)
    if block > 1 and row_padding and t.shape[0] % row_padding:
        n += tensor_bytes(t.ggml_type, (block,)) * (row_padding - t.shape[0] % row_padding) // block
    return -(-n // align) * align if align > 1 else n


def row_split_weights(model, assign, gpus, s, dev_bytes, w) -> list[int]:
    """Row split: 2-D matrices of every GPU layer are divided by rows across GPUs by the split
    (default: total VRAM); the owner device keeps the rest. Estimated."""
    n = len(gpus)
    ts = split_weights(s.tensor_split) if s.tensor_split else [float(g.total_bytes) for g in gpus]
    ts = ts[:n] + [0.0] * (n - len(ts))
    total = sum(ts) or 1.0
    share = [x / total for x in ts]
    out = [0.0] * n
    for il, layer in enumerate(model.layers):
        d = assign[il]
        if d == CPU:
            continue
        mat = sum(t.nbytes for t in layer.tensors if len(t.shape) >= 2 and not t.is_expert)
        for j in range(n):
            out[j] += mat * share[j]
        out[d] += dev_bytes[il] - mat
    o = assign[model.n_layer]
    if o != CPU:
        out[o] += model.output_bytes
    return [int(x) for x in out]


def cuda_padding(model, assign, dev, eng) -> int:
    """Bytes a CUDA buffer adds to the weights of the layers on device dev (row padding, alignment)."""
    per_layer = _layer_padding(model, eng.gpu_row_padding, eng.gpu_tensor_align)
    return sum(b for il, b in enumerate(per_layer) if assign[il] == dev)


_PADDING: dict[tuple[int, int, int], list[int]] = {}


def _layer_padding(model, row_padding: int, align: int) -> list[int]:
    """Per block (then the output layer), the bytes a CUDA buffer adds to its tensors: a property of the
    model and the engine, worked out once per model rather than on every slider move."""
    key = (id(model), row_padding, align)
    got = _PADDING.get(key)
    if got is None:
        groups = [layer.tensors for layer in model.layers] + [model.output_tensors]
        got = [sum(gpu_tensor_bytes(t, row_padding, align) - t.nbytes for t in ts) for ts in groups]
        _PADDING[key] = got
        weakref.finalize(model, _PADDING.pop, key, None)  # the id may be reused once the model is gone
    return got
