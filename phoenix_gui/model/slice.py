"""A slice of a model: its first k layers and everything that is not a layer (embeddings, output), as a
ModelInfo to plan with and as a GGUF file an engine loads.

Why: tuning learns each device's time per layer from measured token times, and a run of the whole model
on a rig where RAM holds layers spends most of a token on the CPU, so a fast card's few percent drown in
the noise. A slice small enough for one device alone puts almost the whole token on that device. A
layer costs a device the same whatever stands before or after it (the same tensors, the same kernels),
so what the slice measures carries over to the whole model.

The file keeps the model's metadata (tokenizer included) with the block count set to k, and leaves the
tensor data unwritten: a sparse file of zeros that costs no disk and loads from no disk. An engine
reads and multiplies every weight the same whatever its value, so the time per layer is the model's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from pathlib import Path

from .gguf_header import _SCALAR, read_header
from .info import ModelInfo, TensorInfo, params_of

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


def slice_info(model: ModelInfo, k: int) -> ModelInfo:
    """The first k layers of the model with its embeddings and output (no file behind it)."""
    if not 1 <= k <= model.n_layer:
        raise ValueError(f"a slice of 1 to {model.n_layer} layers, not {k}")
    outputs = [t for t in model.output_tensors if not _beyond(t, k)]  # extra (NextN) blocks go too
    kept = [t for layer in model.layers[:k] for t in layer.tensors] + model.input_tensors + outputs
    n_params = params_of(kept)
    return dataclasses.replace(
        model, path=None, parts=[], name=f"{model.name} (first {k} layers)", n_layer=k,
        n_head=model.n_head[:k], n_head_kv=model.n_head_kv[:k], n_ff=model.n_ff[:k],
        swa_layers=model.swa_layers[:k], layers=[dataclasses.replace(layer, tensors=list(layer.tensors))
                                                 for layer in model.layers[:k]],
        input_tensors=list(model.input_tensors), output_tensors=outputs,
        file_size=sum(t.nbytes for t in kept), n_params=n_params)


def _beyond(t: TensorInfo, k: int) -> bool:
    m = _LAYER_RE.match(t.name)
    return bool(m) and int(m.group(1)) >= k


def write_slice(model: ModelInfo, k: int, out: str | Path) -> Path:
    """Write the first k layers of a model read from a file (read_model) as a GGUF at `out`.
    The metadata is the model file's, copied byte for byte (the first part of a split model, less the
    split keys) with the block count set to k and arrays of one entry per layer cut to k; the tensor
    data is left as a hole. Raises ValueError or OSError."""
    if not model.parts:
        raise ValueError("only a model read from a file can be sliced to a file")
    sliced = slice_info(model, k)
    tensors = sorted([t for layer in sliced.layers for t in layer.tensors] + sliced.input_tensors
                     + sliced.output_tensors, key=lambda t: (t.part, t.offset))
    kv, alignment = _sliced_metadata(model, k)
    buf = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for raw in kv:
        buf += raw
    offset = 0
    for t in tensors:
        name = t.name.encode()
        buf += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(t.shape))
        buf += b"".join(struct.pack("<Q", d) for d in t.shape) + struct.pack("<IQ", t.ggml_type, offset)
        offset += (t.nbytes + alignment - 1) // alignment * alignment
    buf += b"\0" * (-len(buf) % alignment)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as f:
        f.write(buf)
        f.truncate(len(buf) + offset)  # the data: a hole, zeros to whoever reads it
    os.replace(tmp, out)
    return out


_SIZES = {t: size for t, (_, size) in _SCALAR.items()}  # GGUF value type -> bytes
_INT = {t: fmt for t, (fmt, _) in _SCALAR.items() if t not in (6, 7, 12)}  # the integer types' struct formats


def _sliced_metadata(model: ModelInfo, k: int) -> tuple[list[bytes], int]:
    """The first part's key/value pairs as raw bytes, sliced to k layers, and the file's alignment."""
    try:
        return _read_metadata(model, k)
    except (struct.error, IndexError, UnicodeDecodeError):
        raise ValueError(f"{model.parts[0].name} changed or is damaged since it was read") from None


def _read_metadata(model: ModelInfo, k: int) -> tuple[list[bytes], int]:
    arch = model.architecture
    out: list[bytes] = []
    alignment = 32
    with open(model.parts[0], "rb") as f:
        data = f.read(read_header(model.parts[0]).data_offset)  # the header alone (a tokenizer: a few MB)
    if data[:4] != b"GGUF":
        raise ValueError(f"{model.parts[0].name} is not a GGUF file")
    pos = 4 + 4 + 8
    (n_kv,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    for _ in range(n_kv):
        start = pos
        (n,) = struct.unpack_from("<Q", data, pos)
        key = data[pos + 8:pos + 8 + n].decode("utf-8", "replace")
        pos += 8 + n
        (t,) = struct.unpack_from("<I", data, pos)
        pos += 4
        value_at = pos
        pos = _skip(data, pos, t)
        raw = bytes(data[start:pos])
        if key.startswith("split."):
            continue
        if key == "general.alignment" and t in _INT:
            alignment = struct.unpack_from(_INT[t], data, value_at)[0] or 32
        if key in (f"{arch}.block_count", f"{arch}.nextn_predict_layers") and t in _INT:
            value = k if key.endswith("block_count") else 0
            raw = bytes(data[start:value_at]) + struct.pack(_INT[t], value)
        elif t == 9 and key.startswith(arch + "."):
            et, count = struct.unpack_from("<IQ", data, value_at)
            if count == model.n_layer and et in _SIZES:
                body = data[value_at + 12:value_at + 12 + k * _SIZES[et]]
                raw = bytes(data[start:value_at]) + struct.pack("<IQ", et, k) + bytes(body)
        out.append(raw)
    return out, alignment


def _skip(data: bytes, pos: int, t: int) -> int:
    if t == 8:
        (n,) = struct.unpack_from("<Q", data, pos)
        return pos + 8 + n
    if t == 9:
        et, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if et in _SIZES:
            return pos + count * _SIZES[et]
        for _ in range(count):
            pos = _skip(data, pos, et)
        return pos
    if t not in _SIZES:
        raise ValueError(f"unknown GGUF value type {t}")
    return pos + _SIZES[t]
