"""Paged attention against a float64 reference, and shared-prefix grouping bit for bit."""

import numpy as np
import pytest

from ponder.kernels import attention

BS, D, KVH, G = 16, 64, 3, 3  # block size, head dim, kv heads, query heads per kv head


def setup(ctx_lens, shared_prefix=0, seed=0):
    """One sequence per context length; the first `shared_prefix` blocks are shared physical blocks."""
    rng = np.random.default_rng(seed)
    n = len(ctx_lens)
    width = max(-(-c // BS) for c in ctx_lens)
    tables = np.zeros((n, width), np.int32)
    next_block = shared_prefix
    for s, c in enumerate(ctx_lens):
        for b in range(-(-c // BS)):
            if b < shared_prefix:
                tables[s, b] = b
            else:
                tables[s, b] = next_block
                next_block += 1
    k_pool = rng.standard_normal((next_block, KVH, D, BS)).astype(np.float32)
    v_pool = rng.standard_normal((next_block, KVH, BS, D)).astype(np.float32)
    q = rng.standard_normal((n, KVH * G, D)).astype(np.float32)
    return q, k_pool, v_pool, tables, np.arange(n, dtype=np.int32), np.array(ctx_lens, np.int32)


def run(q, k_pool, v_pool, tables, rows, ctx, groups):
    out = np.zeros_like(q)
    attention.paged_attention(q, k_pool, v_pool, tables, rows, ctx, np.float32(D ** -0.5), out, *groups)
    return out


def reference(q, k_pool, v_pool, tables, rows, ctx):
    out = np.zeros(q.shape)
    for t in range(len(q)):
        blocks = tables[rows[t], : -(-ctx[t] // BS)]
        k = np.concatenate([k_pool[b].transpose(0, 2, 1) for b in blocks], axis=1)[:, : ctx[t]].astype(np.float64)
        v = np.concatenate([v_pool[b] for b in blocks], axis=1)[:, : ctx[t]].astype(np.float64)
        for h in range(q.shape[1]):
            s = k[h // G] @ q[t, h] * D ** -0.5
            p = np.exp(s - s.max())
            out[t, h] = p @ v[h // G] / p.sum()
    return out


@pytest.mark.parametrize("ctx", [[1], [16], [17, 40, 3], [100, 257]])
def test_matches_float64_reference(ctx):
    args = setup(ctx)
    got = run(*args, attention.singleton_groups(len(ctx)))
    np.testing.assert_allclose(got, reference(*args), rtol=1e-5, atol=1e-5)


def test_shared_prefix_groups_are_bit_identical():
    ctx = [70, 75, 66, 90, 64, 81]  # 4 shared full blocks (64 positions), then each its own
    args = setup(ctx, shared_prefix=4, seed=1)
    groups = attention.prefix_groups(args[3], args[4], args[5], BS)
    assert list(groups[2]) == [4, 4]  # one group sharing 4 blocks, in pieces of at most 4 tokens
    np.testing.assert_array_equal(run(*args, groups), run(*args, attention.singleton_groups(len(ctx))))
    np.testing.assert_allclose(run(*args, groups), reference(*args), rtol=1e-5, atol=1e-5)


def test_prefix_groups_split_by_first_block():
    tables = np.array([[0, 1, 2], [0, 1, 5], [7, 8, 9], [0, 1, 2]], np.int32)
    rows = np.arange(4, dtype=np.int32)
    starts, members, shared = attention.prefix_groups(tables, rows, np.array([40, 40, 40, 33], np.int32), 16)
    groups = {tuple(members[starts[i]:starts[i + 1]]): shared[i] for i in range(len(shared))}
    assert groups == {(0, 1, 3): 2, (2,): 0}
    starts, members, shared = attention.prefix_groups(tables, rows, np.array([40, 40, 40, 33], np.int32), 16,
                                                      max_group=2)
    assert list(shared) == [2, 2, 0] and list(members) == [0, 1, 3, 2]
