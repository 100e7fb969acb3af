"""The prefix cache: a radix tree over token blocks whose nodes own KV blocks.

Each node stands for one KV block: the tokens it holds, keyed under its parent
by those tokens, so the path from the root spells a token prefix.  Inner nodes
hold full blocks; a leaf may hold a partial block (the tail of a finished
sequence).  A lookup walks whole blocks by exact key, then takes the child that
agrees longest with what is left, even part of a block: the new sequence shares
that block, reads only the agreeing positions and copies the block before it
writes (copy-on-write).  So the reuse is token-exact, and continuing a finished
text recomputes nothing.  Matches compare the tokens themselves (the dict
hashes a tuple but confirms by equality), never a hash alone.

The tree holds one reference on each of its blocks.  A block that only the tree
references is evictable; eviction takes least-recently-used leaves first (a
sequence using a block uses its whole prefix, so a parent is never in use
while its child is free).
"""

from __future__ import annotations

import itertools

from ponder.engine.kv_cache import KVCache


class _Node:
    __slots__ = ("key", "block", "parent", "children", "last_used")

    def __init__(self, key: tuple, block: int, parent: _Node | None):
        self.key, self.block, self.parent = key, block, parent
        self.children: dict[tuple, _Node] = {}
        self.last_used = 0


class RadixCache:
    def __init__(self, kv: KVCache):
        self.kv = kv
        self.bs = kv.block_size
        self.root = _Node((), -1, None)
        self._clock = itertools.count(1)
        self.num_nodes = 0
        kv.evictor = self

    def _blocks(self, tokens, n_blocks: int):
        for i in range(n_blocks):
            yield tuple(tokens[i * self.bs:(i + 1) * self.bs])

    def match(self, tokens: list[int], limit: int | None = None) -> tuple[list[int], int]:
        """(block ids, n tokens) of the longest cached prefix of tokens, at most `limit` tokens long.

        The last block may be used in part (n not a multiple of the block size);
        the caller shares it and copies it before writing into it.
        """
        n = len(tokens) if limit is None else min(limit, len(tokens))
        node, blocks, now = self.root, [], next(self._clock)
        for key in self._blocks(tokens, n // self.bs):
            child = node.children.get(key)
            if child is None:
                break
            child.last_used = now
            blocks.append(child.block)
            node = child
        matched = len(blocks) * self.bs
        # Within the next block, any child agreeing on a first stretch of tokens will do:
        # the sequence reads only those positions and overwrites the rest in its own copy.
        rest = tokens[matched:n]
        best, best_len = None, 0
        for key, child in node.children.items():
            common = _common_prefix(key, rest)
            if common > best_len:
                best, best_len = child, common
        if best is not None:
            best.last_used = now
            blocks.append(best.block)
            matched += best_len
        return blocks, matched

    def insert(self, tokens: list[int], block_table: list[int], n_tokens: int, partial: bool = False) -> None:
        """Record the blocks holding the first n_tokens of a sequence (whose K/V are computed).

        With partial=True the trailing partial block is recorded too; only do that
        for a sequence that will not write into that block again.
        """
        node, now = self.root, next(self._clock)
        n_full = n_tokens // self.bs
        keys = list(self._blocks(tokens, n_full))
        if partial and n_tokens % self.bs:
            keys.append(tuple(tokens[n_full * self.bs:n_tokens]))
        for i, key in enumerate(keys):
            child = node.children.get(key)
            if child is None:
                child = _Node(key, block_table[i], node)
                node.children[key] = child
                self.kv.mark_cached(block_table[i])
                self.num_nodes += 1
            child.last_used = now
            node = child

    def evict(self, n: int) -> int:
        """Free up to n blocks that only the cache holds, least recently used leaves first."""
        freed = 0
        while freed < n:
            leaves = [node for node in self._walk() if not node.children and self.kv.ref_count[node.block] == 1]
            if not leaves:
                break
            leaves.sort(key=lambda node: node.last_used)
            for node in leaves[: n - freed]:
                del node.parent.children[node.key]
                self.kv.uncache(node.block)
                self.num_nodes -= 1
                freed += 1
        return freed

    def _walk(self):
        stack = list(self.root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())


def _common_prefix(a: tuple, b: list) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
