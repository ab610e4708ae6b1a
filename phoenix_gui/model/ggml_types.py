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
