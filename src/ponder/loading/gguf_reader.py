"""Parse a GGUF file's structure: header, metadata and tensor infos, checked against the file.

ponder's own reader, because the `gguf` package's builds array fields element by
element (seconds for a 49k-token vocabulary) and loops without bound on a corrupt
count.  Here numeric arrays are one `np.frombuffer` each, string arrays one tight
loop, and every count and length is checked against the bytes left in the file
before anything is read or allocated.  Tensor infos are checked too: known type,
1 to 4 dimensions each > 0, rows a whole number of blocks, data aligned, inside
the file, and not overlapping another tensor.

Errors are ModelFormatErrors that name the file and the problem, never the file's
bytes.  This module knows the format, not what a model needs (see gguf_file).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from ponder.errors import ModelFormatError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 2

# GGUF value types: id -> (name, struct format or None for string/array)
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(13)
_SCALAR_FMT = {_UINT8: "<B", _INT8: "<b", _UINT16: "<H", _INT16: "<h", _UINT32: "<I", _INT32: "<i",
               _FLOAT32: "<f", _BOOL: "<B", _UINT64: "<Q", _INT64: "<q", _FLOAT64: "<d"}
_SCALAR_DTYPE = {t: np.dtype(f) for t, f in _SCALAR_FMT.items() if t != _BOOL}
_SCALAR_DTYPE[_BOOL] = np.dtype("<u1")
_TYPE_NAMES = {_UINT8: "uint8", _INT8: "int8", _UINT16: "uint16", _INT16: "int16", _UINT32: "uint32",
               _INT32: "int32", _FLOAT32: "float32", _BOOL: "bool", _STRING: "string", _ARRAY: "array",
               _UINT64: "uint64", _INT64: "int64", _FLOAT64: "float64"}

# ggml tensor types: id -> (name, elements per block, bytes per block), as in ggml.h / ggml.c
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4),
    27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the contiguous (row) dimension
    type_id: int
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type_id][0]

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Span:
    """Where one fixed-size number of the header sits (for tests and diagnostics)."""

    label: str  # e.g. "kv llama.context_length value", "tensor blk.0.attn_q.weight dim 1"
    offset: int
    fmt: str  # struct format, e.g. "<Q"


@dataclass
class GGUFFile:
    path: str
    version: int
    metadata: dict  # key -> int | float | bool | str | np.ndarray (numeric arrays) | list
    tensors: dict[str, TensorInfo]  # in file order
    alignment: int
    data_offset: int  # start of the tensor data section
    size: int
    data: np.ndarray  # uint8, the whole file, memory-mapped read-only
    spans: list[Span] | None = None

    def tensor_bytes(self, t: TensorInfo) -> np.ndarray:
        return self.data[t.offset: t.offset + t.n_bytes]


class _Cursor:
    """Reads little-endian values from a buffer, checking each length against the end first."""

    def __init__(self, path: str, buf, size: int, spans: list | None):
        self.path, self.buf, self.size, self.pos, self.spans = path, buf, size, 0, spans

    def fail(self, problem: str):
        raise ModelFormatError(f"{self.path}: {problem}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            self.fail(f"is truncated or corrupt: {what} needs {n} bytes at offset {self.pos}, "
                      f"but the file has {self.size - self.pos} left")

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        if self.spans is not None:
            self.spans.append(Span(what, self.pos, fmt))
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def string(self, what: str) -> str:
        n = self.scalar("<Q", f"{what} length")
        self.need(n, what)
        raw = self.buf[self.pos: self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8")


def _string_array(cur: _Cursor, count: int, what: str) -> list[str]:
    """`count` strings: the hot part of a load (a vocabulary and its merges).

    The strings' starts come from _short_string_starts in bulk, or from one loop over the
    lengths; the text is then decoded in one call, each 8-byte length replaced by a NUL
    separator.  A string holding a NUL, or invalid UTF-8, takes the string-by-string path,
    which also names the bad string.
    """
    if cur.spans is not None:
        return _strings_one_by_one(cur, count, what)
    buf, start, size = cur.buf, cur.pos, cur.size
    found = _short_string_starts(buf, start, size, count)
    if found is not None:
        heads, pos = found
    else:
        pos = start
        unpack = struct.Struct("<Q").unpack_from
        heads = [0] * count
        for i in range(count):
            if pos + 8 > size:
                return _strings_one_by_one(cur, count, what)  # names where it is truncated
            heads[i] = pos
            (n,) = unpack(buf, pos)
            pos += 8 + n
            if pos > size:
                return _strings_one_by_one(cur, count, what)
        heads = np.asarray(heads, np.int64)
    raw = np.frombuffer(buf, np.uint8, pos - start, start)
    keep = np.ones(len(raw), bool)
    prefix = heads - start
    keep[(prefix[:, None] + np.arange(7)).reshape(-1)] = False  # keep each length's last byte ...
    joined = raw.copy()
    joined[prefix + 7] = 0  # ... as the separator
    try:
        out = joined[keep].tobytes().decode("utf-8").split("\0")[1:]
    except UnicodeDecodeError:
        out = None
    if out is not None and len(out) == count:
        cur.pos = pos
        return out
    return _strings_one_by_one(cur, count, what)  # names the string that is bad


def _short_string_starts(buf, start: int, size: int, count: int) -> tuple[np.ndarray, int] | None:
    """(where each of `count` strings starts, where the last ends), found in bulk, or None.

    A walk over the lengths is one Python step per string (most of a load's parse time for a
    49k-token vocabulary and its merges).  But a length under 256 is one byte and seven zero
    bytes, and every spot of a window followed by seven zero bytes is a candidate: the first
    `count` candidates are exactly the strings when they chain, the first at `start` and each
    start plus 8 plus its length the next start (by induction, the walk would visit just
    these).  All of that is checked at once.  A length of 256 or more, or zero bytes inside
    the strings, breaks the chain: None, and the caller walks.
    """
    if count == 0:
        return None
    for per_string in (24, 96):  # bytes per string in the window: typical vocabularies, then long strings
        window = min(size - start, count * per_string)
        if window < 8 * count:
            return None
        raw = np.frombuffer(buf, np.uint8, window, start)
        zero = raw == 0
        followed = zero[1: window - 6].copy()  # followed[p]: raw[p + 1 .. p + 7] are all zero
        for k in range(2, 8):
            followed &= zero[k: window - 7 + k]
        cand = np.flatnonzero(followed)[:count]
        if len(cand) < count:
            continue  # the window ends too soon (or the strings are long)
        nxt = cand + 8 + raw[cand]
        if cand[0] != 0 or (nxt[:-1] != cand[1:]).any():
            return None
        if nxt[-1] <= window:
            return cand + start, start + int(nxt[-1])
    return None


def _strings_one_by_one(cur: _Cursor, count: int, what: str) -> list[str]:
    return [cur.string(f"{what}[{i}]") for i in range(count)]


def _value(cur: _Cursor, vtype: int, what: str, depth: int = 0):
    if vtype in _SCALAR_FMT:
        v = cur.scalar(_SCALAR_FMT[vtype], f"{what} value")
        if vtype == _BOOL:
            if v > 1:
                cur.fail(f"{what} is a bool with value {v}")
            return bool(v)
        return v
    if vtype == _STRING:
        return cur.string(what)
    if vtype != _ARRAY:
        cur.fail(f"{what} has unknown value type {vtype}")
    if depth >= MAX_ARRAY_NESTING:
        cur.fail(f"{what} nests arrays more than {MAX_ARRAY_NESTING} deep")
    etype = cur.scalar("<I", f"{what} element type")
    count = cur.scalar("<Q", f"{what} count")
    if etype in _SCALAR_DTYPE:
        dtype = _SCALAR_DTYPE[etype]
        cur.need(count * dtype.itemsize, f"{what}: {count} {_TYPE_NAMES[etype]} values")
        arr = np.frombuffer(cur.buf, dtype, count, cur.pos).copy()
        cur.pos += count * dtype.itemsize
        if etype == _BOOL:
            if count and arr.max() > 1:
                cur.fail(f"{what} holds a bool with a value other than 0 or 1")
            arr = arr.astype(bool)
        return arr.astype(arr.dtype.newbyteorder("="))
    # every string takes at least its 8-byte length, every array its 12-byte header:
    # checking that bound first keeps a corrupt count from looping or allocating
    if etype == _STRING:
        cur.need(count * 8, f"{what}: {count} strings")
        return _string_array(cur, count, what)
    if etype == _ARRAY:
        cur.need(count * 12, f"{what}: {count} arrays")
        return [_value(cur, _ARRAY, f"{what}[{i}]", depth + 1) for i in range(count)]
    cur.fail(f"{what} has unknown element type {etype}")


def read(path: str, record_spans: bool = False) -> GGUFFile:
    """Parse and check a GGUF file.  Raises ModelFormatError naming the file and the problem."""
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read the file: {e.strerror}") from None
    with f:
        head = f.read(4)
        if head != MAGIC:
            raise ModelFormatError(f"{path} is not a GGUF file (it does not start with the GGUF magic)")
        if size < 24:
            raise ModelFormatError(f"{path} is truncated: {size} bytes, shorter than a GGUF header")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    spans = [] if record_spans else None
    cur = _Cursor(path, mm, size, spans)
    cur.pos = 4
    version = cur.scalar("<I", "version")
    if version not in VERSIONS:
        cur.fail(f"GGUF version {version} is not supported (ponder reads versions 2 and 3)")
    n_tensors = cur.scalar("<Q", "tensor count")
    n_kv = cur.scalar("<Q", "metadata count")
    # the smallest entries: a key (8 + 0 bytes), a type (4) and a uint8 (1); a tensor
    # info with an empty name and one dimension takes 8 + 4 + 8 + 4 + 8 bytes
    cur.need(n_kv * 13, f"{n_kv} metadata entries")
    meta: dict = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}")
        vtype = cur.scalar("<I", f"kv {key} type")
        if key in meta:
            cur.fail(f"metadata key {key!r} appears twice")
        meta[key] = _value(cur, vtype, f"kv {key}")
    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1) \
            or alignment > 1 << 16:
        cur.fail(f"general.alignment {alignment!r} is not a power of two up to 65536")

    cur.need(n_tensors * 32, f"{n_tensors} tensor infos")
    infos = []
    names = set()
    for i in range(n_tensors):
        name = cur.string(f"tensor {i} name")
        if name in names:
            cur.fail(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = cur.scalar("<I", f"tensor {name} dims")
        if not 1 <= n_dims <= MAX_DIMS:
            cur.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        shape = tuple(cur.scalar("<Q", f"tensor {name} dim {d}") for d in range(n_dims))
        type_id = cur.scalar("<I", f"tensor {name} type")
        rel = cur.scalar("<Q", f"tensor {name} offset")
        infos.append((name, shape, type_id, rel))
    data_offset = -(-cur.pos // alignment) * alignment

    tensors: dict[str, TensorInfo] = {}
    for name, shape, type_id, rel in infos:
        if type_id not in GGML_TYPES:
            cur.fail(f"tensor {name!r} has unknown type id {type_id}")
        tname, block, block_bytes = GGML_TYPES[type_id]
        if any(d == 0 for d in shape):
            cur.fail(f"tensor {name!r} has a dimension of 0 (shape {list(shape)})")
        if shape[0] % block:
            cur.fail(f"tensor {name!r}: its rows of {shape[0]} are not a whole number of {tname} blocks of {block}")
        n_elements = math.prod(shape)
        n_bytes = n_elements // block * block_bytes
        if rel % alignment:
            cur.fail(f"tensor {name!r}: data offset {rel} is not a multiple of the alignment {alignment}")
        start = data_offset + rel
        if n_bytes > size or start > size - n_bytes:
            cur.fail(f"is truncated or corrupt: tensor {name!r} ({tname}, shape {list(shape)}) would end at "
                     f"byte {start + n_bytes}, past the end of the file ({size} bytes)")
        tensors[name] = TensorInfo(name, shape, type_id, start, n_bytes)
    ordered = sorted(tensors.values(), key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.n_bytes > b.offset:
            cur.fail(f"tensors {a.name!r} and {b.name!r} overlap (a tensor's type, shape or offset is wrong)")
    data = np.frombuffer(mm, np.uint8)
    return GGUFFile(path, version, meta, tensors, alignment, data_offset, size, data, spans)
