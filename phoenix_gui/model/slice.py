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
from pathlib import Path

import numpy as np

from .info import ModelInfo, TensorInfo

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")


def slice_info(model: ModelInfo, k: int) -> ModelInfo:
    """The first k layers of the model with its embeddings and output (no file behind it)."""
    if not 1 <= k <= model.n_layer:
        raise ValueError(f"a slice of 1 to {model.n_layer} layers, not {k}")
    outputs = [t for t in model.output_tensors if not _beyond(t, k)]  # extra (NextN) blocks go too
    kept = [t for layer in model.layers[:k] for t in layer.tensors] + model.input_tensors + outputs
    n_params = 0
    for t in kept:
        n = 1
        for d in t.shape:
            n *= d
        n_params += n
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
    The metadata is the model file's (the first part of a split model, less the split keys); arrays
    with one entry per layer are cut to k."""
    import gguf

    if not model.parts:
        raise ValueError("only a model read from a file can be sliced to a file")
    sliced = slice_info(model, k)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    reader = gguf.GGUFReader(model.parts[0], "r")
    arch = model.architecture
    w = gguf.GGUFWriter(tmp, arch)
    try:
        for name, field in reader.fields.items():
            if name.startswith(("GGUF.", "split.")) or name == "general.architecture":
                continue
            vtype = field.types[0]
            value = field.contents()
            if name == f"{arch}.block_count":
                value = k
            elif name == f"{arch}.nextn_predict_layers":
                value = 0
            elif vtype == gguf.GGUFValueType.ARRAY and name.startswith(arch + ".") and len(value) == model.n_layer:
                value = value[:k]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            w.add_key_value(name, value, vtype, sub_type=sub)
        tensors = sorted([t for layer in sliced.layers for t in layer.tensors] + sliced.input_tensors
                         + sliced.output_tensors, key=lambda t: (t.part, t.offset))
        for t in tensors:
            w.add_tensor_info(t.name, tuple(reversed(t.shape)), np.dtype(np.float32), t.nbytes, raw_dtype=gguf.GGMLQuantizationType(t.ggml_type))
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
    finally:
        w.close()
        del reader
    from .gguf_header import read_header

    h = read_header(tmp)
    sizes = {t.name: t.nbytes for t in tensors}
    end = max(e.offset + sizes[e.name] for e in h.tensors)
    with open(tmp, "r+b") as f:
        f.truncate(h.data_offset + (end + h.alignment - 1) // h.alignment * h.alignment)  # sparse: zeros
    os.replace(tmp, out)
    return out
