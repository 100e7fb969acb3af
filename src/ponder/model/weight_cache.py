"""The packed-weight cache: a model file's matrices, packed for the kernels, kept on disk.

Packing a model for the integer kernels takes about a second of NumPy shuffling;
loading a pack that was written before is a memory map.  One cache file per model
file and instruction set, under $PONDER_HOME/packed/, named by the model's path,
the set and the kernels' layout id.  Inside, the header records:

* the model file's identity: size, mtime and a SHA-256 of its first 2 MiB (the
  GGUF header) and of 64 KiB samples spread over the rest.  A file that changed
  is repacked and its cache file replaced;
* the set and layout id, and this format's version: a cache file from another
  set, layout or version is never read;
* per entry, the packed object's plain attributes and where its arrays are;
* a checksum of the data (64-bit sum and xor of its words), checked on every load.
  A truncated or corrupt file is rebuilt, never trusted.

FORMAT_VERSION also covers what the loader does to a matrix before packing (e.g.
undoing llama.cpp's Q/K row order): bump it when that changes.

Writes go to a temporary file in the same directory and are renamed into place,
so readers see a whole file or none.  A packed object is stored generically (its
array attributes as data, the others as JSON), so the cache does not depend on
the kernels' QMatrix fields.  PONDER_PACK_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import secrets
import struct
import sys

import numpy as np

MAGIC = b"PONDERPK"
FORMAT_VERSION = 2
_ALIGN = 4096  # data offsets: page-aligned for the memory map, and a multiple of 64 for the kernels
_HEAD = struct.Struct("<8sIQ")  # magic, format version, index length
_SAMPLE = 64 << 10
_HEADER_BYTES = 2 << 20
# Smaller packs are not written: packing them takes milliseconds, and a cache file per
# throwaway model (tests, experiments) would only fill the disk.
MIN_BYTES = 8 << 20
_CHUNK_WORDS = 1 << 15  # 256 KiB: fits in L2
_MADV_POPULATE_READ = 22  # Linux's value, for Pythons whose mmap module does not name it


def layout_id() -> str:
    """This process's instruction set and the kernels' id of its packed layout: part of the key.

    The set is in the key as well as the layout because a packed matrix records the back end
    that runs it: a pack written under avx2 must not be run as avx2 where PONDER_ISA (or
    another machine sharing $PONDER_HOME) chose portable, though both share a layout.
    """
    from ponder.kernels import isa

    return f"{isa.current()}.{isa.layout_id()}"


def enabled() -> bool:
    return os.environ.get("PONDER_PACK_CACHE", "1").strip() not in ("0", "false", "no", "off")


def file_identity(path: str) -> dict:
    """Size, mtime and a hash of the header and samples of a file: cheap, and it changes when the file does."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_HEADER_BYTES))
        rest = st.st_size - _HEADER_BYTES
        if rest > 0:
            for i in range(65):  # 64 samples spread evenly, then the tail
                f.seek(_HEADER_BYTES + max(0, rest - _SAMPLE) * i // 64)
                h.update(f.read(_SAMPLE))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sample_sha256": h.hexdigest()}


def cache_path(source: str, layout: str) -> str:
    from ponder.loading.registry import ponder_home

    tag = hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:16]
    return os.path.join(ponder_home(), "packed", f"{os.path.basename(source)[:64]}-{tag}-{layout}.pack")


def checksum(data: np.ndarray) -> list[int]:
    """64-bit sum and xor of the words of data (its length a multiple of 8): cheap, and any flipped bit shows.

    One cache-sized chunk at a time: both reductions read a chunk while it is in cache, so the
    data streams from memory once, not twice (same values as one reduction each)."""
    words = data.view(np.uint64)
    total, xor = 0, 0
    for at in range(0, len(words), _CHUNK_WORDS):
        chunk = words[at: at + _CHUNK_WORDS]
        total = (total + int(np.add.reduce(chunk, dtype=np.uint64))) % (1 << 64)  # as one reduction wraps
        xor ^= int(np.bitwise_xor.reduce(chunk))
    return [total, xor]


class PackedWeightCache:
    """get/put packed matrices by name; save() writes the file if anything was packed anew."""

    def __init__(self, source: str, layout: str | None = None):
        self.source = source
        self.layout = layout or layout_id()
        self.path = cache_path(source, self.layout)
        self.identity = file_identity(source)
        self._loaded: dict[str, object] = {}
        self._new: dict[str, object] = {}
        self.status = "empty"  # "hit" (read a valid file), "stale", "corrupt", or "empty" (none there)
        self._load()

    @classmethod
    def for_source(cls, source: str | None) -> PackedWeightCache | None:
        """The cache of a model file, or None (no file behind the weights, or caching turned off)."""
        if source is None or not os.path.isfile(source) or not enabled():
            return None
        return cls(source)

    # -- reading --------------------------------------------------------------
    def _load(self) -> None:
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        with f:
            try:
                size = os.fstat(f.fileno()).st_size
                magic, version, n = _HEAD.unpack(f.read(_HEAD.size))
                if magic != MAGIC or version != FORMAT_VERSION or n > size:
                    raise ValueError("not a pack of this version")
                index = json.loads(f.read(n))
                if index.get("identity") != self.identity or index.get("layout") != self.layout:
                    self.status = "stale"
                    return
                start, length = index["data_offset"], index["data_bytes"]
                if start % _ALIGN or start + length != size or length % 8:
                    raise ValueError("data section does not match the file size")
                data = _map(f, start, length)
                if checksum(data) != index["checksum"]:
                    raise ValueError("checksum mismatch")
                self._loaded = {name: _restore(entry, data) for name, entry in index["entries"].items()}
                self.status = "hit"
            # anything wrong with the file, or a packed type since renamed or moved: rebuild
            except (ValueError, KeyError, TypeError, IndexError, AttributeError, ImportError, struct.error,
                    OSError):
                self._loaded = {}
                self.status = "corrupt"

    def get(self, name: str):
        return self._loaded.get(name)

    # -- writing --------------------------------------------------------------
    def put(self, name: str, packed) -> None:
        self._new[name] = packed

    def save(self) -> None:
        """Write every entry (old and new) if any is new.  A read-only home costs a repack next time."""
        entries = {**self._loaded, **self._new}
        if not self._new or sum(map(_array_bytes, entries.values())) < MIN_BYTES:
            return
        index_entries, arrays, offset = {}, [], 0
        for name, obj in entries.items():
            attrs, where = {}, {}
            for attr, value in _attributes(obj).items():
                if isinstance(value, np.ndarray):
                    where[attr] = [offset, value.dtype.str, list(value.shape)]
                    arrays.append((offset, value))
                    offset += -(-value.nbytes // 64) * 64
                else:
                    attrs[attr] = value
            index_entries[name] = {"class": f"{type(obj).__module__}:{type(obj).__qualname__}",
                                   "attrs": attrs, "arrays": where}
        data = np.zeros(offset, np.uint8)
        for at, value in arrays:
            data[at: at + value.nbytes] = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        index = {"identity": self.identity, "layout": self.layout, "entries": index_entries,
                 "data_bytes": offset, "checksum": checksum(data), "data_offset": 0}
        head_len = _HEAD.size + len(json.dumps(index).encode()) + 64  # room for the offset's digits
        index["data_offset"] = -(-head_len // _ALIGN) * _ALIGN
        blob = json.dumps(index).encode()
        blob = _HEAD.pack(MAGIC, FORMAT_VERSION, len(blob)) + blob
        if write_atomic(self.path, [blob, b"\0" * (index["data_offset"] - len(blob)), memoryview(data)]):
            self._loaded, self._new = entries, {}


def write_atomic(path: str, parts) -> bool:
    """Write the byte strings `parts` to path through a temporary file renamed into place, so that
    readers see a whole file or none.  False (nothing written) if the directory is not writable.
    The file gets the user's umask, as any file they write does (mkstemp's would be 0600, which
    hides a shared cache from the other users of a machine)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                for part in parts:
                    f.write(part)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return False
    return True


def _map(f, start: int, length: int) -> np.ndarray:
    """The data section as a uint8 array over a private (copy-on-write) mapping.

    Pages stay shared with the page cache (the kernels never write weights), and the
    arrays are writable, so Numba sees the same types as for a fresh pack.  Not
    MAP_POPULATE: on a private writable mapping Linux populates with write faults, which
    copy every page (measured: 0.15 s for the default model, and its memory twice).
    MADV_POPULATE_READ (Linux 5.14) maps them shared in one call; without it the
    checksum's reads fault them in.
    """
    if not length:
        return np.empty(0, np.uint8)
    mm = mmap.mmap(f.fileno(), length, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
    if sys.platform.startswith("linux"):
        try:
            mm.madvise(getattr(mmap, "MADV_POPULATE_READ", _MADV_POPULATE_READ))
        except OSError:  # an older kernel: the pages fault in as they are read
            pass
    return np.frombuffer(mm, np.uint8)


def _attributes(obj) -> dict:
    """A packed object's fields: packed types declare __slots__ (the kernels' QMatrix does)."""
    return {n: getattr(obj, n) for n in type(obj).__slots__}


def _array_bytes(obj) -> int:
    return sum(v.nbytes for v in _attributes(obj).values() if isinstance(v, np.ndarray))


def _restore(entry: dict, data: np.ndarray):
    import importlib

    module, qualname = entry["class"].split(":")
    if not module.startswith("ponder.kernels."):  # only the kernels' own packed types are rebuilt
        raise ValueError("not a packed kernel type")
    cls = getattr(importlib.import_module(module), qualname)
    if set(entry["attrs"]) | set(entry["arrays"]) != set(cls.__slots__):
        raise ValueError("the packed type's fields changed")  # written by other code: repack
    obj = object.__new__(cls)
    for attr, value in entry["attrs"].items():
        setattr(obj, attr, value)
    for attr, (offset, dtype, shape) in entry["arrays"].items():
        dt = np.dtype(dtype)
        n = math.prod(shape) * dt.itemsize
        if offset % 64 or offset + n > len(data):
            raise ValueError("array outside the data section")
        setattr(obj, attr, data[offset: offset + n].view(dt).reshape(shape))
    return obj
