"""Paged attention against a float64 reference, shared-prefix grouping bit for bit, and the IR
fold of every back end and block size against the scalar fold."""

import numba
import numpy as np
import pytest

from ponder.kernels import attention
from ponder.kernels import isa as ISA
from attention_reference import reference

BS, D, KVH, G = 16, 64, 3, 3  # block size, head dim, kv heads, query heads per kv head


def setup(ctx_lens, shared_prefix=0, seed=0, d=D, bs=BS):
    """One sequence per context length; the first `shared_prefix` blocks are shared physical blocks."""
    rng = np.random.default_rng(seed)
    n = len(ctx_lens)
    width = max(-(-c // bs) for c in ctx_lens)
    tables = np.zeros((n, width), np.int32)
    next_block = shared_prefix
    for s, c in enumerate(ctx_lens):
        for b in range(-(-c // bs)):
            if b < shared_prefix:
                tables[s, b] = b
            else:
                tables[s, b] = next_block
                next_block += 1
    k_pool = rng.standard_normal((next_block, KVH, d, bs)).astype(np.float32)
    v_pool = rng.standard_normal((next_block, KVH, bs, d)).astype(np.float32)
    q = rng.standard_normal((n, KVH * G, d)).astype(np.float32)
    return q, k_pool, v_pool, tables, np.arange(n, dtype=np.int32), np.array(ctx_lens, np.int32)


def run(q, k_pool, v_pool, tables, rows, ctx, groups, scalar=False, isa=None):
    out = np.full_like(q, np.nan)
    attention.paged_attention(q, k_pool, v_pool, tables, rows, ctx, np.float32(q.shape[2] ** -0.5), out, *groups,
                              scalar=scalar, isa=isa)
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


def prefill_chunk(start, n, d=D, seed=2):
    """n tokens of one sequence at positions start..start+n-1 (causal), the cache holding start + n positions."""
    rng = np.random.default_rng(seed)
    nblocks = -(-(start + n) // BS)
    tables = rng.permutation(nblocks + 3)[:nblocks].astype(np.int32)[None, :]  # scattered physical blocks
    k_pool = rng.standard_normal((nblocks + 3, KVH, d, BS)).astype(np.float32)
    v_pool = rng.standard_normal((nblocks + 3, KVH, BS, d)).astype(np.float32)
    q = rng.standard_normal((n, KVH * G, d)).astype(np.float32)
    ctx = (start + np.arange(n) + 1).astype(np.int32)
    return q, k_pool, v_pool, tables, np.zeros(n, np.int32), ctx


@pytest.mark.parametrize("start,n", [(0, 40), (37, 50), (256, 64)])
def test_prefill_chunk_grouped_equals_singletons(start, n):
    args = prefill_chunk(start, n)
    single = run(*args, attention.singleton_groups(n))
    for max_group in (2, 4, 8, n):  # n: the whole chunk as one Hydragen group
        groups = attention.prefix_groups(args[3], args[4], args[5], BS, max_group=max_group)
        np.testing.assert_array_equal(run(*args, groups), single)
    np.testing.assert_allclose(single, reference(*args), rtol=1e-5, atol=1e-5)


def test_token_bits_independent_of_batch():
    args = prefill_chunk(100, 30)
    full = run(*args, attention.singleton_groups(30))
    q, k_pool, v_pool, tables, rows, ctx = args
    for t in (0, 13, 29):  # each token alone in the call
        alone = run(q[t:t + 1].copy(), k_pool, v_pool, tables, rows[t:t + 1], ctx[t:t + 1],
                    attention.singleton_groups(1))
        np.testing.assert_array_equal(alone[0], full[t])


# One back end per distinct attention tiling (the 256-bit sets share theirs).
ATT_ISAS = ["avx512_vnni", "avx2"]


def need(isa):
    if not ISA.supported(isa):
        pytest.skip(f"this CPU cannot run {isa}")


@pytest.mark.parametrize("isa", ATT_ISAS)
@pytest.mark.parametrize("d,bs", [(64, 16), (128, 16), (64, 32)])
def test_ir_kernel_equals_scalar_fold(isa, d, bs):
    """The LLVM IR kernels and the scalar Numba fold run the same operations: same bits,
    for head dims 64 and 128 and block sizes other than the vector width."""
    need(isa)
    assert attention.uses_ir(d, bs, isa)   # never a silent fallback to the scalar fold
    ctx = [1, 15, 16, 17, 70, 75, 66, 90, 64, 81, 300]
    args = setup(ctx, shared_prefix=1, seed=3, d=d, bs=bs)
    for groups in (attention.singleton_groups(len(ctx)), attention.prefix_groups(args[3], args[4], args[5], bs)):
        np.testing.assert_array_equal(run(*args, groups, isa=isa), run(*args, groups, scalar=True))
    np.testing.assert_allclose(run(*args, attention.singleton_groups(len(ctx)), isa=isa), reference(*args),
                               rtol=1e-5, atol=1e-5)


def test_back_ends_agree_with_block_size_8():
    ctx = [3, 8, 9, 40]
    args = setup(ctx, seed=5, bs=8)
    want = run(*args, attention.singleton_groups(len(ctx)), scalar=True)
    for isa in ATT_ISAS:
        if ISA.supported(isa):
            assert attention.uses_ir(64, 8, isa)
            np.testing.assert_array_equal(run(*args, attention.singleton_groups(len(ctx)), isa=isa), want)
    np.testing.assert_allclose(want, reference(*args), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [32, 36])
def test_other_head_dims(d):
    """d=32 runs the IR fold, d=36 (not a multiple of 8) the scalar one; both are right."""
    assert attention.uses_ir(32, BS) and not attention.uses_ir(36, BS)
    args = setup([5, 40, 33], d=d)
    got = run(*args, attention.singleton_groups(3))
    np.testing.assert_array_equal(got, run(*args, attention.singleton_groups(3), scalar=True))
    np.testing.assert_allclose(got, reference(*args), rtol=1e-5, atol=1e-5)


def test_same_bits_with_one_or_two_threads():
    args = prefill_chunk(20, 60)
    groups = attention.prefix_groups(args[3], args[4], args[5], BS)
    prev = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run(*args, groups)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = run(*args, groups)
    finally:
        numba.set_num_threads(prev)
    np.testing.assert_array_equal(one, two)


def test_positions_past_context_are_never_read():
    """The unused slots of a sequence's last block may hold anything (here NaN)."""
    ctx = [5, 21, 47]
    q, k_pool, v_pool, tables, rows, ctx_a = setup(ctx, seed=4)
    want = run(q, k_pool, v_pool, tables, rows, ctx_a, attention.singleton_groups(3))
    for s, c in enumerate(ctx):
        last = tables[s, (c - 1) // BS]
        k_pool[last, :, :, c % BS or BS:] = np.nan
        v_pool[last, :, c % BS or BS:, :] = np.nan
    for scalar in (False, True):
        got = run(q, k_pool, v_pool, tables, rows, ctx_a, attention.singleton_groups(3), scalar=scalar)
        np.testing.assert_array_equal(got, want)


def test_a_job_per_query_head_changes_no_bits():
    """A step with few (group, KV head) jobs makes a job of each query head (attention.SPLIT_BELOW):
    each token attended alone (split) must give the bits it gets in a batch big enough not to split."""
    ctx = [5, 40, 77, 129]
    args = setup(ctx, seed=3)
    assert len(ctx) * KVH >= attention.SPLIT_BELOW > KVH
    together = run(*args, attention.singleton_groups(len(ctx)))
    q, k_pool, v_pool, tables, rows, lens = args
    for t in range(len(ctx)):
        alone = run(q[t:t + 1], k_pool, v_pool, tables, rows[t:t + 1], lens[t:t + 1], attention.singleton_groups(1))
        assert np.array_equal(alone[0], together[t])
