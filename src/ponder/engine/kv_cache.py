"""The paged KV cache: a pool of fixed-size blocks, their reference counts, copy-on-write.

The pool holds, for every layer, `num_blocks` blocks of `block_size` positions.
A sequence owns a block table: the ids of its blocks in position order.  Blocks
are shared by reference count: forks of a sequence point at the same blocks, and
a block is written only by a sequence that holds the sole reference to it
(`make_writable` copies it first otherwise).  A block returns to the free list
when its count drops to zero.

The prefix cache (radix_cache.py) also holds references: a block it holds that
nobody else does is "evictable", and `allocate` evicts such blocks when the
free list is empty.
"""

from __future__ import annotations

import mmap

import numpy as np

from ponder.errors import PonderError


def _lazy_zeros(shape) -> np.ndarray:
    """A float32 array whose memory is committed page by page as it is written.

    A sequence's blocks are scattered over the layers' slices of the pool, so with
    transparent huge pages each first write would commit 2 MB; 4 KB pages keep a
    large, mostly empty pool cheap.
    """
    size = int(np.prod(shape)) * 4
    buf = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buf, np.float32, count=int(np.prod(shape))).reshape(shape)


class KVPoolFullError(PonderError):
    http_status = 503
    code = "kv_pool_full"


class KVCache:
    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, num_blocks: int, block_size: int = 16):
        self.block_size = block_size
        self.num_blocks = num_blocks
        # keys transposed within a block (see kernels/attention.py)
        self.k = _lazy_zeros((n_layers, num_blocks, n_kv_heads, head_dim, block_size))
        self.v = _lazy_zeros((n_layers, num_blocks, n_kv_heads, block_size, head_dim))
        self.ref_count = np.zeros(num_blocks, np.int32)
        self.cached = np.zeros(num_blocks, bool)  # held by the prefix cache
        self.num_evictable = 0  # cached blocks nobody else references
        self.evictor = None  # the RadixCache, when there is one
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out low ids first

    @classmethod
    def for_model(cls, config, memory_bytes: int, block_size: int = 16) -> KVCache:
        per_block = 2 * config.n_layers * config.n_kv_heads * block_size * config.head_dim * 4
        return cls(config.n_layers, config.n_kv_heads, config.head_dim, max(2, memory_bytes // per_block), block_size)

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_available(self) -> int:
        """Blocks an allocation can get: free ones plus those the prefix cache would give up."""
        return len(self._free) + self.num_evictable

    def blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    def allocate(self) -> int:
        if not self._free and self.evictor is not None:
            self.evictor.evict(1)
        if not self._free:
            raise KVPoolFullError("the KV cache pool is full")
        block = self._free.pop()
        self.ref_count[block] = 1
        return block

    def share(self, block: int) -> int:
        if self.cached[block] and self.ref_count[block] == 1:
            self.num_evictable -= 1
        self.ref_count[block] += 1
        return block

    def release(self, block: int) -> None:
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            self._free.append(block)
        elif self.cached[block] and self.ref_count[block] == 1:
            self.num_evictable += 1

    def mark_cached(self, block: int) -> None:
        """The prefix cache takes its own reference on a block."""
        self.share(block)
        self.cached[block] = True
        if self.ref_count[block] == 1:  # pragma: no cover - a sequence always holds the block too
            self.num_evictable += 1

    def uncache(self, block: int) -> None:
        """The prefix cache drops an evictable block: it becomes free."""
        assert self.cached[block] and self.ref_count[block] == 1
        self.cached[block] = False
        self.num_evictable -= 1
        self.release(block)

    def copy_lanes(self, src: int, dsts: list[int], n: int) -> None:
        """Copy the first n positions of block src into blocks dsts, in every layer (draft tree tails)."""
        if n:
            for d in dsts:
                self.k[:, d, :, :, :n] = self.k[:, src, :, :, :n]
                self.v[:, d, :, :n, :] = self.v[:, src, :, :n, :]

    def make_writable(self, table: list[int], index: int) -> None:
        """Copy-on-write: give table[index] its own copy if the block is shared."""
        block = table[index]
        if self.ref_count[block] > 1:
            fresh = self.allocate()
            self.k[:, fresh] = self.k[:, block]
            self.v[:, fresh] = self.v[:, block]
            self.release(block)
            table[index] = fresh
