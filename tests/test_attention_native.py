"""Paged attention on the native runtime's pool (kernels/attention_native) bit for bit against the Numba
driver (attention.paged_attention: its IR fold and its scalar fold), on every back end this CPU runs,
for decode, prefill chunks, forks sharing a prompt, GQA, block sizes 8-64, head dims 64 and 128, one
and two threads; against a float64 reference; and its errors."""

import numpy as np
import pytest

from ponder.kernels import attention, attention_groups, attention_native, native
from ponder.kernels import isa as ISA
from attention_reference import reference

SIMD = [n for n in ISA.available() if n != "scalar"]


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def make(ctx_lens, shared_prefix=0, seed=0, d=64, bs=16, kvh=3, g=3, nan_tail=True):
    """One sequence per context length (the first shared_prefix blocks the same physical blocks),
    physical blocks scattered; the unused positions of every last block hold NaN (never read)."""
    rng = np.random.default_rng(seed)
    n = len(ctx_lens)
    width = max(-(-c // bs) for c in ctx_lens)
    n_blocks = shared_prefix + sum(max(0, -(-c // bs) - shared_prefix) for c in ctx_lens) + 2
    perm = rng.permutation(n_blocks).astype(np.int32)
    tables = np.zeros((n, width), np.int32)
    nxt = shared_prefix
    for s, c in enumerate(ctx_lens):
        for b in range(-(-c // bs)):
            tables[s, b] = perm[b] if b < shared_prefix else perm[nxt]
            nxt += b >= shared_prefix
    k_pool = rng.standard_normal((n_blocks, kvh, d, bs)).astype(np.float32)
    v_pool = rng.standard_normal((n_blocks, kvh, bs, d)).astype(np.float32)
    if nan_tail:
        for s, c in enumerate(ctx_lens):
            if c % bs:
                last = tables[s, (c - 1) // bs]
                k_pool[last, :, :, c % bs:] = np.nan
                v_pool[last, :, c % bs:, :] = np.nan
    q = rng.standard_normal((n, kvh * g, d)).astype(np.float32)
    return q, k_pool, v_pool, tables, np.arange(n, dtype=np.int32), np.array(ctx_lens, np.int32)


def chunk(start, n, d=64, bs=16, kvh=3, g=3, seed=2):
    """A prefill chunk: n tokens of one sequence at positions start..start+n-1."""
    q, k_pool, v_pool, tables, _, _ = make([start + n], seed=seed, d=d, bs=bs, kvh=kvh, g=g)
    q = np.random.default_rng(seed + 1).standard_normal((n, kvh * g, d)).astype(np.float32)
    return q, k_pool, v_pool, tables, np.zeros(n, np.int32), (start + np.arange(n) + 1).astype(np.int32)


def scale_of(q):
    return np.float32(q.shape[2] ** -0.5)


def numba(args, groups, scalar=False):
    q = args[0]
    out = np.full_like(q, np.nan)
    attention.paged_attention(*args, scale_of(q), out, *groups, scalar=scalar)
    return out


def native_run(args, groups, isa=None, threads=None):
    q, k_pool, v_pool, tables, rows, ctx = args
    out = np.full_like(q, np.nan)
    p = attention_native.plan(groups, ctx, k_pool.shape[3], k_pool.shape[1], q.shape[1], isa=isa)
    before = native.set_threads(threads) if threads else None
    try:
        for _ in range(2):   # a plan serves every layer: a second call gives the same bits
            attention_native.run(p, q, k_pool, v_pool, tables, rows, ctx, scale_of(q), out)
    finally:
        if threads:
            native.set_threads(before)
    return out


def prefix(args, bs=16, **kw):
    return attention_groups.prefix_groups(args[3], args[4], args[5], bs, **kw)


def cases():
    """(name, args, groups) of the steps the engine runs, on SmolLM2's attention shape (9 heads, 3 KV, d=64, bs=16)."""
    one = make([300], seed=1)
    two = make([300, 45], seed=2)
    pre = chunk(100, 64)
    forks = make([300 + i % 3 for i in range(16)], shared_prefix=18, seed=4)
    mixed = make([1, 5, 15, 16, 17, 21, 47, 64, 70, 81, 129], shared_prefix=0, seed=5)
    return [
        ("decode 1", one, attention_groups.singleton_groups(1)),          # a job per query head (SPLIT_BELOW)
        ("decode 2", two, attention_groups.singleton_groups(2)),
        ("prefill 64", pre, prefix(pre)),                          # groups of 4 tokens of one sequence
        ("prefill 64 one group", pre, prefix(pre, max_group=64)),
        ("prefill 64 singletons", pre, attention_groups.singleton_groups(64)),
        ("16 forks", forks, prefix(forks)),
        ("16 forks one group", forks, prefix(forks, max_group=16)),
        ("partial blocks", mixed, attention_groups.singleton_groups(11)),
    ]


CASES = cases()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_same_bits_as_the_numba_driver(case, threads):
    if not SIMD:
        pytest.skip("no SIMD back end on this CPU: attention stays on Numba's scalar fold")
    _, args, groups = CASES[case]
    assert attention_native.supports(64, 16)
    got = native_run(args, groups, threads=threads)
    assert same_bits(got, numba(args, groups, scalar=True))
    if threads == 1:
        assert same_bits(got, numba(args, groups))   # the Numba driver on its IR fold


SHAPES = [(64, 8, 3), (64, 16, 1), (64, 32, 3), (64, 64, 1), (128, 16, 3), (128, 64, 3)]   # (d, bs, G)


@pytest.mark.parametrize("isa", SIMD or ["none"])
@pytest.mark.parametrize("d,bs,g", SHAPES)
def test_shapes_and_back_ends(isa, d, bs, g):
    """Head dims 64 and 128, block sizes 8-64, GQA G=1 and G=3 on this process's back end; every other
    back end the CPU runs on two shapes (its compile costs ~1 s a shape)."""
    if isa == "none":
        pytest.skip("no SIMD back end on this CPU")
    if isa != ISA.current() and (d, bs, g) not in ((64, 16, 1), (128, 64, 3)):
        pytest.skip("other back ends: two shapes")
    assert attention_native.supports(d, bs, isa)   # never a silent fallback
    dec = make([3 * bs + 5, 2 * bs], seed=d + bs, d=d, bs=bs, kvh=2, g=g)
    forks = make([5 * bs + i for i in range(6)], shared_prefix=4, seed=7, d=d, bs=bs, kvh=2, g=g)
    pre = chunk(2 * bs + 3, 24, d=d, bs=bs, kvh=2, g=g)
    steps = ((dec, attention_groups.singleton_groups(2)), (forks, prefix(forks, bs)), (pre, prefix(pre, bs)))
    for args, groups in steps:
        want = numba(args, groups, scalar=True)
        for threads in (1, 2):
            assert same_bits(native_run(args, groups, isa=isa, threads=threads), want), (threads, groups[2])


def test_matches_float64_reference():
    if not SIMD:
        pytest.skip("no SIMD back end on this CPU")
    args = make([1, 16, 17, 40, 300], seed=9)
    got = native_run(args, attention_groups.singleton_groups(5))
    np.testing.assert_allclose(got, reference(*args), rtol=1e-5, atol=1e-5)
    forks = make([70, 75, 66, 90], shared_prefix=4, seed=1)
    np.testing.assert_allclose(native_run(forks, prefix(forks)), reference(*forks), rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_clear_error():
    if not SIMD:
        pytest.skip("no SIMD back end on this CPU")
    q, k_pool, v_pool, tables, rows, ctx = args = make([40, 70], seed=3)
    groups = attention_groups.singleton_groups(2)
    assert not attention_native.supports(36, 16) and not attention_native.supports(64, 16, "scalar")
    with pytest.raises(ValueError, match="power of two"):
        attention_native.plan(groups, ctx, 12, 3, 9)
    with pytest.raises(ValueError, match="evenly"):
        attention_native.plan(groups, ctx, 16, 2, 9)
    with pytest.raises(ValueError, match="in full"):   # a shared block that is not full
        attention_native.plan((np.array([0, 2]), np.array([0, 1]), np.array([3])), ctx, 16, 3, 9)
    p = attention_native.plan(groups, ctx, 16, 3, 9)
    out = np.empty_like(q)
    with pytest.raises(ValueError, match="float32"):
        attention_native.run(p, q.astype(np.float64), k_pool, v_pool, tables, rows, ctx, scale_of(q), out)
    with pytest.raises(ValueError, match="contiguous"):   # a block's keys not transposed
        attention_native.run(p, q, k_pool.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2), v_pool, tables,
                             rows, ctx, scale_of(q), out)
    with pytest.raises(ValueError, match="outside the KV pool"):
        bad = tables.copy()
        bad[1, 0] = len(k_pool)
        attention_native.run(p, q, k_pool, v_pool, bad, rows, ctx, scale_of(q), out)
    with pytest.raises(ValueError, match="narrower"):
        attention_native.run(p, q, k_pool, v_pool, tables[:, :2].copy(), rows, ctx, scale_of(q), out)
    attention_native.run(p, q, k_pool, v_pool, tables.astype(np.int64), rows, ctx, scale_of(q), out)
    assert same_bits(out, numba(args, groups))   # other index dtypes are converted
    out2 = np.empty_like(q)
    attention_native.run(p, q, k_pool, v_pool, tables, rows, ctx, float(scale_of(q)) + 1e-12, out2)
    assert same_bits(out2, out)   # a Python float scale is rounded to float32
    attention_native.run(p, q, k_pool, v_pool, tables, rows, ctx, 1, out2)
    attention_native.run(p, q, k_pool, v_pool, tables, rows, ctx, np.float32(1), out)
    assert same_bits(out2, out)   # an int scale is a number, not a float's bits
    with pytest.raises(ValueError, match="row for every token"):
        attention_native.run(p, q, k_pool, v_pool, tables, rows[:1].copy(), ctx, scale_of(q), out)


@pytest.mark.real_model
def test_real_model_logits_with_native_attention(default_model, monkeypatch):
    """SmolLM2-135M (9 heads, 3 KV heads, d=64, KV blocks of 16) through FastModel: the all-Numba kernel
    set against the same set with attention_native's plan and run, bit for bit: a 70-token prefill,
    then a decode step of 4 forks of it (prefix groups) and one of a single fork (split jobs)."""
    import dataclasses

    from ponder.engine.kv_cache import KVCache
    from ponder.model import kernel_set
    from ponder.model.fast_model import FastModel, StepInput

    if not attention_native.supports(64, 16):
        pytest.skip("no native attention on this back end")
    fm = FastModel(default_model.weights)
    c = fm.config
    numba_set = kernel_set.numba_kernels()
    mixed = dataclasses.replace(numba_set, plan_attention=attention_native.plan, attention=attention_native.run)
    prompt = default_model.tokenizer.encode("Solve step by step: 17 sheep, buy 25 more, sell 9. How many? " * 2)[:70]
    n0 = len(prompt)
    tables = np.zeros((4, 6), np.int32)
    for f in range(4):
        tables[f, :5] = np.arange(5)      # the prompt's blocks (70 positions: 4 full blocks + 6 in block 4)
        tables[f, 5] = 5 + f              # each fork's own block for what follows
    tables[:, 4] = [4, 9, 10, 11]         # the partial block is each fork's own copy (copy-on-write)

    def steps():
        yield StepInput(np.array(prompt), np.arange(n0), np.zeros(n0, np.int32), tables[:1], np.arange(n0))
        toks = np.array([prompt[-1], 11, 12, 13])
        yield StepInput(toks, np.full(4, n0), np.arange(4, dtype=np.int32), tables, np.arange(4))
        yield StepInput(np.array([7]), np.array([n0 + 1]), np.array([2], np.int32), tables, np.arange(1))

    results = []
    for ks in (numba_set, mixed):
        monkeypatch.setattr(fm, "kernels", lambda bs, ks=ks: ks)
        kv = KVCache(c.n_layers, c.n_kv_heads, c.head_dim, 12, 16)
        logits = []
        for i, step in enumerate(steps()):
            if i == 1:   # the forks' copies of the partial prompt block
                kv.k[:, 9:12], kv.v[:, 9:12] = kv.k[:, 4:5], kv.v[:, 4:5]
            logits.append(fm.forward(step, kv.k, kv.v).copy())
        results.append(logits)
    for a, b in zip(*results):
        assert same_bits(a, b)


def test_through_ctypes_when_the_builtin_is_unavailable(monkeypatch):
    """The runtime's fallback call path (native/bind.py) gives the same bits, the scale included."""
    if not SIMD:
        pytest.skip("no SIMD back end on this CPU")
    _, args, groups = CASES[5]   # 16 forks
    want = native_run(args, groups)
    monkeypatch.setattr(native.runtime(), "pycall", None)
    assert same_bits(native_run(args, groups), want)
