"""Sizes of ggml tensor and cache types, from the gguf package's tables."""

from __future__ import annotations

import gguf

from .errors import ModelFileError

_SIZES = {int(t): v for t, v in gguf.GGML_QUANT_SIZES.items()}
_NAMES = {int(t): t.name for t in gguf.GGMLQuantizationType}
_BY_NAME = {t.name.lower(): int(t) for t in gguf.GGMLQuantizationType}


def type_name(ggml_type: int) -> str:
    return _NAMES.get(ggml_type, f"type{ggml_type}")


def type_by_name(name: str) -> int:
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise ValueError(f"unknown tensor type {name!r}") from None


def row_bytes(ggml_type: int, n: int) -> int:
    """Bytes of a row of n elements (llama.cpp's ggml_row_size)."""
    block, size = _SIZES[ggml_type]
    return n // block * size


def tensor_bytes(ggml_type: int, shape: tuple[int, ...], where: str = "") -> int:
    if ggml_type not in _SIZES:
        raise ModelFileError(f"{where}uses tensor type {ggml_type}, which this version of Phoenix does not know.")
    block, size = _SIZES[ggml_type]
    if not shape or shape[0] % block:
        raise ModelFileError(f"{where}has a tensor whose shape does not fit its type {type_name(ggml_type)}.")
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def block_size(ggml_type: int) -> int:
    return _SIZES[ggml_type][0]


def bits_per_weight(ggml_type: int) -> float:
    """Exact storage bits per weight of a type, from its block: bytes per block x 8 / weights per block
    (Q4_0: 18 B per 32 weights = 4.5; Q4_K: 144 B per 256 = 4.5; Q6_K: 210 B per 256 = 6.5625)."""
    block, size = _SIZES.get(ggml_type, (1, 2))
    return size * 8 / block


# The kernel a decode step runs on a weight of each type, grouped where the arithmetic per weight is alike
# (planner/speed.py prices each group per architecture and CPU instruction set):
#   f16    - no unpacking (F32/F16/BF16): a plain mat-vec, no int8 dot product
#   q8_0   - one scale per 32 bytes: the cheapest quantized dot product
#   legacy - 4-5 bit blocks of 32 with one or two scales (Q4_0, Q4_1, Q5_0, Q5_1, MXFP4)
#   k45    - 4-5 bit super-blocks of 256 with 6-bit sub-block scales (Q4_K, Q5_K)
#   q6_k   - 6-bit super-blocks (Q6_K)
#   k23    - 2-3 bit super-blocks, more shifts and masks per weight (Q2_K, Q3_K)
#   iq4    - 4-bit non-linear values through a 16-entry table (IQ4_NL, IQ4_XS)
#   iq_low - 1-3 bit codebook (grid) lookups and sign tables (IQ1_*, IQ2_*, IQ3_*, TQ*)
_FAMILY_BY_NAME = {
    "F32": "f16", "F16": "f16", "BF16": "f16", "F64": "f16",
    "Q8_0": "q8_0", "Q8_1": "q8_0", "Q8_K": "q8_0",
    "Q4_0": "legacy", "Q4_1": "legacy", "Q5_0": "legacy", "Q5_1": "legacy", "MXFP4": "legacy",
    "Q4_K": "k45", "Q5_K": "k45", "Q6_K": "q6_k", "Q2_K": "k23", "Q3_K": "k23",
    "IQ4_NL": "iq4", "IQ4_XS": "iq4",
}
KERNEL_FAMILIES = ("f16", "q8_0", "legacy", "k45", "q6_k", "k23", "iq4", "iq_low")


def kernel_family(ggml_type: int) -> str:
    name = type_name(ggml_type).upper()
    if name in _FAMILY_BY_NAME:
        return _FAMILY_BY_NAME[name]
    if name.startswith(("IQ1", "IQ2", "IQ3", "TQ")):
        return "iq_low"
    return "k45"  # a type this table does not know: priced as the common 4-5 bit k-quant
