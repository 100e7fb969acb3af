"""The cache of compiled native objects: one file per unit and key under $PONDER_HOME/kernels/.

A file holds a header (magic, format version, the JSON of build.key() and the object's
length and checksum) and the object code.  It is used only if its key equals the one this
process would compile under (CPU name and features, instruction set unit, llvmlite version,
source hash, OS) and its checksum matches (weight_cache.checksum: 64-bit sum and xor of the
words); anything else (stale, truncated, corrupt, unreadable) is recompiled and replaced,
never trusted.  Writes are atomic (weight_cache.write_atomic), so a reader sees a whole file
or none; a read-only home only costs a compile per process.  The file name carries a hash of
the key, so objects for several CPUs or versions can share one home.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np

from ponder.model.weight_cache import checksum, write_atomic

MAGIC = b"PONDEROB"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<8sIQ")   # magic, format version, header JSON length


def path(key: dict) -> str:
    from ponder.loading.registry import ponder_home

    tag = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(ponder_home(), "kernels", f"native-{key['unit']}-{tag}.obj")


def _padded(obj: bytes) -> np.ndarray:
    data = np.zeros(-(-len(obj) // 8) * 8, np.uint8)
    data[:len(obj)] = np.frombuffer(obj, np.uint8)
    return data


def read(key: dict) -> tuple[bytes | None, str]:
    """(object code, "hit") or (None, why not: "missing", "stale" or "corrupt")."""
    try:
        with open(path(key), "rb") as f:
            blob = f.read()
    except OSError:
        return None, "missing"
    try:
        magic, version, n = _HEAD.unpack_from(blob)
        if magic != MAGIC:
            return None, "corrupt"
        if version != FORMAT_VERSION:
            return None, "stale"
        start = _HEAD.size + n
        head = json.loads(blob[_HEAD.size:start])
        if head["key"] != key:
            return None, "stale"
        start = -(-start // 8) * 8
        obj = blob[start:start + head["bytes"]]
        if len(obj) != head["bytes"] or len(blob) != start + len(_padded(obj)) or \
                checksum(_padded(obj)) != head["checksum"]:
            return None, "corrupt"
        return obj, "hit"
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None, "corrupt"


def write(key: dict, obj: bytes) -> bool:
    """Store obj under key; False if the home is not writable."""
    data = _padded(obj)
    head = json.dumps({"key": key, "bytes": len(obj), "checksum": checksum(data)}).encode()
    start = _HEAD.size + len(head)
    return write_atomic(path(key), [_HEAD.pack(MAGIC, FORMAT_VERSION, len(head)), head,
                                    b"\0" * (-start % 8), memoryview(data)])
