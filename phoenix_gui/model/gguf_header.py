"""A GGUF header reader that never touches tensor data and skips big array payloads.

gguf.GGUFReader materialises every array element (seconds for a 150k-token vocabulary);
planning needs only scalars, small arrays and the tensor table, so large arrays are
skipped and only their length is kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..validate import InputError, regular_file
from .errors import ModelFileError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# GGUF value types -> (struct format, size); 8 = string, 9 = array
_SCALAR = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_NP_DTYPE = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
             10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9

# Arrays up to this many elements are decoded (per-layer head counts, SWA patterns ...).
SMALL_ARRAY = 4096
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 20
MAX_DIMS = 8
MAX_STRING = 64 << 20
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class SkippedArray:
    """An array too big to be worth decoding: its element type and length only."""

    element_type: int
    length: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    shape: tuple[int, ...]  # GGUF order: ne0 (row length) first
    ggml_type: int
    offset: int  # relative to the data section


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict = field(default_factory=dict)
    tensors: list[TensorEntry] = field(default_factory=list)
    data_offset: int = 0
    file_size: int = 0
    alignment: int = DEFAULT_ALIGNMENT
    kv_bytes: dict = field(default_factory=dict)  # key -> bytes its entry takes in the header (quants.py)


class _Cursor:
    __slots__ = ("f", "buf", "base", "pos", "file_size", "path")

    def __init__(self, f, file_size: int, path: Path):
        self.f = f
        self.buf = b""
        self.base = 0  # file offset of buf[0]
        self.pos = 0  # index into buf
        self.file_size = file_size
        self.path = path

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _need(self, n: int) -> None:
        if self.pos + n <= len(self.buf):
            return
        if self.offset + n > self.file_size:
            raise ModelFileError(f"{self.path.name} is truncated: its header ends before the file does.")
        # Refill with at least 4 MiB so the many small reads stay in Python memory.
        self.f.seek(self.offset)
        self.base = self.offset
        self.buf = self.f.read(max(n, 4 << 20))
        self.pos = 0
        if len(self.buf) < n:
            raise ModelFileError(f"{self.path.name} is truncated: its header ends before the file does.")

    def read(self, n: int) -> bytes:
        self._need(n)
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, st: struct.Struct):
        self._need(st.size)
        v = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def u32(self) -> int:
        return self.unpack(_U32)[0]

    def u64(self) -> int:
        return self.unpack(_U64)[0]

    def string(self) -> str:
        n = self.u64()
        if n > MAX_STRING:
            raise ModelFileError(f"{self.path.name} has a corrupt header (a {n}-byte string).")
        try:
            return self.read(n).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(f"{self.path.name} has a corrupt header (a string that is not UTF-8).") from None

    def skip_strings(self, count: int) -> None:
        """Walk `count` length-prefixed strings without decoding them."""
        unpack_from = _U64.unpack_from
        remaining = count
        while remaining:
            buf, pos, end = self.buf, self.pos, len(self.buf)
            # Fast path inside the current buffer; refill when a string crosses its end.
            while remaining and pos + 8 <= end:
                n = unpack_from(buf, pos)[0]
                if pos + 8 + n > end:
                    break
                pos += 8 + n
                remaining -= 1
            self.pos = pos
            if remaining:
                n = self.u64()
                if n > MAX_STRING:
                    raise ModelFileError(f"{self.path.name} has a corrupt header (a {n}-byte string).")
                self._need(n)
                self.pos += n
                remaining -= 1


_U32 = struct.Struct("<I")


def _value(c: _Cursor, vtype: int, depth: int = 0):
    if vtype in _SCALAR:
        fmt, size = _SCALAR[vtype]
        return struct.unpack(fmt, c.read(size))[0]
    if vtype == _STRING:
        return c.string()
    if vtype == _ARRAY:
        if depth > 2:
            raise ModelFileError(f"{c.path.name} has a corrupt header (arrays nested too deep).")
        etype = c.u32()
        count = c.u64()
        if etype in _SCALAR:
            size = _SCALAR[etype][1]
            if count * size > c.file_size:
                raise ModelFileError(f"{c.path.name} is truncated or corrupt: an array in its header runs past the end of the file.")
            if count <= SMALL_ARRAY:
                import numpy as np

                arr = np.frombuffer(c.read(count * size), dtype=_NP_DTYPE[etype])
                return [bool(x) for x in arr] if etype == 7 else arr.tolist()
            c._need(0)
            _skip(c, count * size)
            return SkippedArray(etype, count)
        if etype == _STRING:
            if count * 8 > c.file_size:
                raise ModelFileError(f"{c.path.name} is truncated or corrupt: an array in its header runs past the end of the file.")
            if count <= 64:
                return [c.string() for _ in range(count)]
            c.skip_strings(count)
            return SkippedArray(etype, count)
        if etype == _ARRAY:
            if count > 256:  # GGUF files do not nest big arrays; this bounds memory on corrupt files
                raise ModelFileError(f"{c.path.name} has a corrupt header (a huge nested array).")
            return [_value(c, _ARRAY, depth + 1) for _ in range(count)]
        raise ModelFileError(f"{c.path.name} has a corrupt header (unknown array type {etype}).")
    raise ModelFileError(f"{c.path.name} has a corrupt header (unknown value type {vtype}).")


def _skip(c: _Cursor, n: int) -> None:
    if c.pos + n <= len(c.buf):
        c.pos += n
        return
    target = c.offset + n
    if target > c.file_size:
        raise ModelFileError(f"{c.path.name} is truncated: its header ends before the file does.")
    c.buf, c.base, c.pos = b"", target, 0


def read_header(path: str | Path) -> GGUFHeader:
    """Read metadata and the tensor table of one GGUF file (one part of a split model)."""
    path = Path(path)
    try:  # a FIFO or a device named x.gguf would block open() or read forever: regular files only
        regular_file(path, "The model file")
    except InputError as e:
        raise ModelFileError(str(e)) from None
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(f"The model file {path} does not exist.") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path} is a folder, not a model file.") from None
    except OSError as e:
        raise ModelFileError(f"The model file {path} cannot be opened ({e.strerror or e}).") from None
    with f:
        size = path.stat().st_size
        c = _Cursor(f, size, path)
        if size < 24:
            raise ModelFileError(f"{path.name} is not a GGUF model file (it is too small).")
        magic = c.read(4)
        if magic != GGUF_MAGIC:
            raise ModelFileError(f"{path.name} is not a GGUF model file.")
        version = c.u32()
        if version not in SUPPORTED_VERSIONS:
            if version > 0xFFFF:
                raise ModelFileError(f"{path.name} is a big-endian GGUF file, which Phoenix does not read.")
            raise ModelFileError(f"{path.name} uses GGUF version {version}, which Phoenix does not read (versions 2 and 3 are supported).")
        n_tensors = c.u64()
        n_kv = c.u64()
        if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
            raise ModelFileError(f"{path.name} has a corrupt header (absurd counts: {n_tensors} tensors, {n_kv} keys).")
        meta: dict = {}
        kv_bytes: dict = {}
        for _ in range(n_kv):
            start = c.offset
            key = c.string()
            vtype = c.u32()
            meta[key] = _value(c, vtype)
            kv_bytes[key] = c.offset - start
        tensors = []
        for _ in range(n_tensors):
            name = c.string()
            n_dims = c.u32()
            if n_dims == 0 or n_dims > MAX_DIMS:
                raise ModelFileError(f"{path.name} has a corrupt header (tensor {name!r} has {n_dims} dimensions).")
            shape = c.unpack(struct.Struct(f"<{n_dims}Q"))
            ggml_type, offset = c.unpack(_TYPE_OFFSET)
            tensors.append(TensorEntry(name, tuple(shape), ggml_type, offset))
        alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > (1 << 20):
            raise ModelFileError(f"{path.name} has a corrupt header (alignment {alignment!r}).")
        end = c.offset
        data_offset = (end + alignment - 1) // alignment * alignment
        return GGUFHeader(path, version, meta, tensors, data_offset, size, alignment, kv_bytes)


_TYPE_OFFSET = struct.Struct("<IQ")
