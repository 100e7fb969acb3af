"""DraftTree: a speculative draft as a tree of tokens, and how its nodes are laid out in the KV cache.

Node i has a token and a parent: -1 is the root (the sequence's last real token,
at position P0 = len(seq) - 1), otherwise an earlier node.  A node at depth k sits
at position P0 + k.  A linear draft (prompt lookup) is the one-path tree.

Exactness without a tree mask: attention folds a token's context block by block,
lane = position % block_size (kernels/attention.py).  So each node must find its
ancestors in the lanes of their positions, in blocks laid out as in linear decoding.
The tree is cut into *branches*: branch 0 is the chain of first children from the
root; every other node that is not its parent's first child starts a new branch
that follows first children down.  A branch's nodes attend through one block table:
the sequence's full blocks before P0's block, then the branch's *tail* (branch 0's
tail is the sequence's own; every other branch gets private blocks whose lanes
before P0 are a copy of the sequence's partial block).  Each branch's tail holds its
nodes' K/V and those of the ancestors of its first node (written to several slots in
the step, see `kv_slots`).  A node attends to exactly its ancestors because lanes
past its position are masked by the context length, as in a prefill chunk.  After
the draw, the tail of the deepest accepted node's branch becomes the sequence's tail:
its K/V are exactly what linear decoding would have written.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class DraftTree:
    tokens: list[int]
    parents: list[int]  # parent node of each node, -1 the root; parents come before children
    # set by the scheduler when it reserves blocks: the full block list of each branch >= 1
    branch_tables: dict[int, list[int]] = field(default_factory=dict)
    shared_blocks: int = 0  # leading blocks every branch shares with the sequence (P0 // block_size)

    def __post_init__(self):
        assert len(self.tokens) == len(self.parents)
        self.depth: list[int] = []
        self.children: dict[int, list[int]] = {-1: []}
        self.branch_of: list[int] = []
        self.branch_start: list[int] = [-1]  # branch 0 starts below the root
        for i, p in enumerate(self.parents):
            assert -1 <= p < i, "a parent comes before its children"
            self.depth.append(1 if p < 0 else self.depth[p] + 1)
            siblings = self.children.setdefault(p, [])
            if not siblings:  # a first child continues its parent's branch
                self.branch_of.append(0 if p < 0 else self.branch_of[p])
            else:
                self.branch_of.append(len(self.branch_start))
                self.branch_start.append(i)
            siblings.append(i)
            self.children[i] = []

    @classmethod
    def linear(cls, tokens: list[int]) -> DraftTree:
        return cls(list(tokens), list(range(-1, len(tokens) - 1)))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def num_branches(self) -> int:
        return len(self.branch_start)

    def main_depth(self) -> int:
        """Nodes in branch 0 (the positions the sequence's own blocks must cover past the root)."""
        return self.branch_of.count(0)

    def branch_depth(self, b: int) -> int:
        """Depth of the deepest node of branch b (a chain: its last node)."""
        return max(self.depth[i] for i, x in enumerate(self.branch_of) if x == b)

    def ancestors(self, node: int) -> list[int]:
        """Ancestor nodes of `node`, root first, the root as -1 (node itself excluded)."""
        out = []
        while node >= 0:
            node = self.parents[node]
            out.append(node)
        return out[::-1]

    def prefix(self, n: int) -> DraftTree:
        """The first n nodes (a tree again: parents come first)."""
        return DraftTree(self.tokens[:n], self.parents[:n])

    def main_chain(self) -> DraftTree:
        """Branch 0 alone, as a linear draft."""
        return DraftTree.linear([t for t, b in zip(self.tokens, self.branch_of) if b == 0])

    def child_with_token(self, node: int, token: int) -> int | None:
        for c in self.children[node]:
            if self.tokens[c] == token:
                return c
        return None
