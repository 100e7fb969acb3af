"""The kernels a model's forward pass runs besides its products, chosen once per model and KV block size.

Two implementations, the same bits (each native kernel is tested against its Numba twin):

* native (kernels/native, on when native.active): the norms, RoPE and the split into
  heads, SiLU*mul, the KV writes (kernels/ops_native.py) and paged attention
  (kernels/attention_native.py) come from ponder's llvmlite objects, attention on its
  thread pool beside the products.  Numba is never imported, which is a third of a warm start.
* numba: kernels/ops.py and kernels/attention.py, the reference path, and the path where
  the native runtime is off or does not apply (float weights, PONDER_ISA=scalar).

A native model whose attention shape the IR fold does not cover (attention_emit.supports)
runs Numba's attention; `numba` then says that Numba kernels run beside the native pool,
and the model runner runs them on one thread (two spinning pools on the same cores collapse).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class KernelSet:
    name: str
    rms_norm: Callable          # (x, weight, eps, out)
    add_rms_norm: Callable      # (x, y, weight, eps, out): x += y, out = rms_norm(x)
    qkv_heads: Callable         # (q_src, q_col, k_src, k_col, v_src, v_col, bq, bk, bv, positions, cos, sin, q, k, v)
    silu_mul: Callable          # (gate_src, gate_col, up_src, up_col, out)
    write_kv: Callable          # (k_pool, v_pool, k, v, slot_token, slot_block, slot_offset)
    plan_attention: Callable    # (groups, context_len, block_size, kv_heads, heads) -> plan, once per step
    attention: Callable         # (plan, q, k_pool, v_pool, block_tables, token_row, context_len, scale, out)
    numba: bool                 # whether any of these is a Numba kernel


def _numba_attention():
    from ponder.kernels import attention

    def plan(groups, context_len, block_size, kv_heads, heads):
        return groups

    def run(groups, q, k_pool, v_pool, block_tables, token_row, context_len, scale, out):
        attention.paged_attention(q, k_pool, v_pool, block_tables, token_row, context_len, scale, out, *groups)

    return plan, run, attention.write_kv


def numba_kernels() -> KernelSet:
    from ponder.kernels import ops

    plan, run, write_kv = _numba_attention()
    return KernelSet("numba", ops.rms_norm, ops.add_rms_norm, ops.qkv_heads, ops.silu_mul, write_kv, plan, run, True)


def native_kernels(head_dim: int, block_size: int) -> KernelSet:
    from ponder.kernels import attention_native, ops_native

    if attention_native.supports(head_dim, block_size):
        plan, run, numba = attention_native.plan, attention_native.run, False
    else:
        plan, run, _ = _numba_attention()
        numba = True
    return KernelSet("native", ops_native.rms_norm, ops_native.add_rms_norm, ops_native.qkv_heads,
                     ops_native.silu_mul, ops_native.write_kv, plan, run, numba)


def choose(native: bool, head_dim: int, block_size: int) -> KernelSet:
    return native_kernels(head_dim, block_size) if native else numba_kernels()
