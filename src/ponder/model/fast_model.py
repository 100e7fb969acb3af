"""The fast forward pass: Llama-family layers on ponder's kernels, over a paged KV cache.

One call runs a flat batch of tokens from any number of sequences (prefill
chunks and decode steps mixed).  Every kernel computes a token's values
independently of the other tokens in the batch, so the logits of a sequence are
bit-identical however it is batched, chunked or threaded, and whichever implementation
runs them (the native runtime's or Numba's: model/kernel_set.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ponder.kernels import attention_groups, isa, rope
from ponder.loading.weights import ModelWeights
from ponder.model import kernel_set
from ponder.model.linear import Activations, QuantLinear, make_fused_linear, make_linear
from ponder.model.weight_cache import PackedWeightCache


@dataclass
class StepInput:
    """What the engine asks of one forward step.

    tokens, positions: (T,) the new tokens and their positions in their sequences.
    token_row: (T,) which row of block_tables holds the token's sequence.
    block_tables: (S, max_blocks) int32 block ids of each sequence, in position order.
    logits_rows: indices into the T tokens whose logits are wanted.
    share_prefix: group tokens that share leading KV blocks in attention (same bits either way).
    kv_slots: None (token t's K/V go to its own position in its own row's blocks), or
      (slot_token, slot_position, slot_row): slot s receives token slot_token[s]'s K/V at position
      slot_position[s] of block table row slot_row[s] (a draft tree writes a node's K/V into
      several private tails; see engine/draft_tree.py).
    """

    tokens: np.ndarray
    positions: np.ndarray
    token_row: np.ndarray
    block_tables: np.ndarray
    logits_rows: np.ndarray
    share_prefix: bool = True
    kv_slots: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


class _Group:
    """Matrices that read the same input, run as one stacked product when their formats allow."""

    def __init__(self, tensors, cache):
        fused = make_fused_linear(tensors, cache)
        if fused is not None:
            self.parts, self.offsets = [fused[0]], fused[1]
        else:
            self.parts, self.offsets = [make_linear(t, cache) for t in tensors], None
        self.nbytes = sum(p.nbytes for p in self.parts)

    def __call__(self, act: Activations) -> list[tuple[np.ndarray, int]]:
        """Each matrix's output as (array, first column): of a stacked product, the one output and
        each matrix's first column in it (the kernels read it in place; see kernels/ops.py)."""
        if self.offsets is None:
            return [(p(act), 0) for p in self.parts]
        y = self.parts[0](act)
        return [(y, a) for a in self.offsets[:-1]]


class _Layer:
    def __init__(self, lw, cache):
        self.attn_norm, self.ffn_norm = lw.attn_norm.astype(np.float32), lw.ffn_norm.astype(np.float32)
        self.qkv = _Group([lw.wq, lw.wk, lw.wv], cache)
        self.wo = make_linear(lw.wo, cache)
        self.gate_up = _Group([lw.w_gate, lw.w_up], cache)
        self.inter = lw.w_gate.rows
        self.w_down = make_linear(lw.w_down, cache)
        # an empty bias is none (the kernel tests its length)
        self.bq, self.bk, self.bv = (np.zeros(0, np.float32) if b is None else b.astype(np.float32)
                                     for b in (lw.bq, lw.bk, lw.bv))

    def nbytes(self) -> int:
        return self.qkv.nbytes + self.wo.nbytes + self.gate_up.nbytes + self.w_down.nbytes


class FastModel:
    def __init__(self, weights: ModelWeights, activation_bits: int = 16, native: bool = False):
        """native: run on the native runtime (model/kernel_set.py) if the model allows it: every
        product on the integer path, and an instruction set with generated kernels."""
        self.config = c = weights.config
        self.bits = activation_bits
        self.embed = weights.embed
        # packed once per model file and layout, then memory-mapped (model/weight_cache.py)
        cache = PackedWeightCache.for_source(weights.source)
        self.layers = [_Layer(lw, cache) for lw in weights.layers]
        self.output = make_linear(weights.output, cache)
        if cache is not None:
            cache.save()
        self.pack_cache = "off" if cache is None else cache.status
        self.final_norm = weights.final_norm.astype(np.float32)
        # RoPE tables cover the positions used so far, not the declared context: a file may
        # declare millions of positions, and a request uses a few hundred.
        self.cos = self.sin = np.empty((0, c.head_dim // 2), np.float32)
        weights.release_pages()  # the packed copies are what run now
        self.scale = np.float32(1.0 / np.sqrt(c.head_dim))
        self.native = native and isa.current() != "scalar" and self.quantized()
        self._kernels: dict[int, kernel_set.KernelSet] = {}   # by KV block size

    def kernels(self, block_size: int) -> kernel_set.KernelSet:
        """The kernels this model runs with KV blocks of block_size (chosen once per size)."""
        ks = self._kernels.get(block_size)
        if ks is None:
            ks = self._kernels[block_size] = kernel_set.choose(self.native, self.config.head_dim, block_size)
        return ks

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers) + self.output.nbytes

    def quantized(self) -> bool:
        """Whether every weight product is on the integer path (QuantLinear), none on float weights."""
        linears = [self.output] + [lin for layer in self.layers for lin in
                                   (*layer.qkv.parts, layer.wo, *layer.gate_up.parts, layer.w_down)]
        return all(isinstance(lin, QuantLinear) for lin in linears)

    def _cover_positions(self, positions: np.ndarray) -> None:
        """Grow the RoPE tables (doubling, at least 256 rows) to cover `positions`.

        Each row is a function of its position alone, so growing gives the same bits as
        building the full table up front.
        """
        need = int(positions.max()) + 1
        if need > len(self.cos):
            c = self.config
            n = max(need, min(max(2 * len(self.cos), 256), c.context_length))
            self.cos, self.sin = rope.rope_tables(c.rope_theta, c.head_dim, n)

    def forward(self, step: StepInput, k_pool: np.ndarray, v_pool: np.ndarray) -> np.ndarray:
        """Run the new tokens through the model, writing their K/V into the pools.

        k_pool: (layers, blocks, kv_heads, head_dim, block_size), v_pool: (layers, blocks,
        kv_heads, block_size, head_dim), float32.
        Returns float32 logits of shape (len(step.logits_rows), vocab).
        """
        c = self.config
        n = len(step.tokens)
        self._cover_positions(step.positions)
        bs = v_pool.shape[3]
        kern = self.kernels(bs)
        tables = step.block_tables
        if step.kv_slots is None:
            slot_token, slot_pos, slot_row = np.arange(n), step.positions, step.token_row
        else:
            slot_token, slot_pos, slot_row = step.kv_slots
        slot_token = np.asarray(slot_token, np.int64)
        slot_block = tables[slot_row, slot_pos // bs].astype(np.int32)
        slot_offset = (slot_pos % bs).astype(np.int32)
        context_len = (step.positions + 1).astype(np.int32)
        groups = (attention_groups.prefix_groups(tables, step.token_row, context_len, bs) if step.share_prefix
                  else attention_groups.singleton_groups(n))
        plan = kern.plan_attention(groups, context_len, bs, c.n_kv_heads, c.n_heads)  # the same in every layer
        # the residual stream, updated in place: a fresh array of our own
        x = np.require(self.embed.dequantize_rows(step.tokens), np.float32, ["C", "W", "O"])
        h = np.empty_like(x)
        q = np.empty((n, c.n_heads, c.head_dim), np.float32)
        k, v = (np.empty((n, c.n_kv_heads, c.head_dim), np.float32) for _ in range(2))
        attn = np.empty((n, c.n_heads, c.head_dim), np.float32)
        kern.rms_norm(x, self.layers[0].attn_norm, c.norm_eps, h)
        for li, layer in enumerate(self.layers):
            (qs, qc), (ks, kc), (vs, vc) = layer.qkv(Activations(h, self.bits, self.native))
            kern.qkv_heads(qs, qc, ks, kc, vs, vc, layer.bq, layer.bk, layer.bv, step.positions, self.cos, self.sin,
                          q, k, v)
            kern.write_kv(k_pool[li], v_pool[li], k, v, slot_token, slot_block, slot_offset)
            kern.attention(plan, q, k_pool[li], v_pool[li], tables, step.token_row, context_len, self.scale, attn)
            kern.add_rms_norm(x, layer.wo(Activations(attn.reshape(n, -1), self.bits, self.native)), layer.ffn_norm,
                             c.norm_eps, h)
            (gs, gc), (us, uc) = layer.gate_up(Activations(h, self.bits, self.native))
            mid = np.empty((n, layer.inter), np.float32)
            kern.silu_mul(gs, gc, us, uc, mid)
            down = layer.w_down(Activations(mid, self.bits, self.native))
            if li + 1 < len(self.layers):
                kern.add_rms_norm(x, down, self.layers[li + 1].attn_norm, c.norm_eps, h)
            else:
                np.add(x, down, out=x)
        if len(step.logits_rows) == 0:  # a prefill chunk that ends no sequence
            return np.empty((0, c.vocab_size), np.float32)
        rows = x[step.logits_rows]
        out = np.empty_like(rows)
        kern.rms_norm(rows, self.final_norm, c.norm_eps, out)
        return np.ascontiguousarray(self.output(Activations(out, self.bits, self.native)))
