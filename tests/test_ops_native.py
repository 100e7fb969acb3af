"""The native runtime's serial kernels (kernels/ops_emit.py through ops_native / sampling_native) bit
for bit against their Numba twins (kernels/ops.py, attention.write_kv, kernels/sampling_numba.py), on edge
cases and on the default model's shapes and data.  The "ops" unit is ISA-free IR: one object for
every instruction set, so there is no per-set matrix here."""

import numpy as np
import pytest

from ponder.engine import sampler
from ponder.kernels import attention, native, ops, ops_emit, ops_native, rope, sampling_native
from ponder.kernels import sampling_numba as S
from ponder.kernels.native import build

RNG = np.random.default_rng(14)
DIMS = (1, 7, 15, 16, 17, 33, 576)


def same_bits(a, b):
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def activations(n, dim, scale=1.0):
    x = (RNG.standard_normal((n, dim)) * scale).astype(np.float32)
    x[0, :min(dim, 3)] = [1e-30, -0.0, 3e4][:min(dim, 3)]
    return x


# -- the forward pass's kernels ------------------------------------------------------------------------

@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("eps", [1e-5, 1e-6, np.float32(1e-5), 0.1])
def test_rms_norm_and_add_rms_norm(dim, eps):
    n = 3
    x = activations(n, dim)
    x[1] = 0.0   # a zero row: 1/sqrt(eps)
    w = RNG.standard_normal(dim).astype(np.float32)
    want, got = np.empty_like(x), np.empty_like(x)
    ops.rms_norm(x, w, eps, want)
    ops_native.rms_norm(x, w, eps, got)
    assert same_bits(got, want)
    y = RNG.standard_normal((n, dim + 24)).astype(np.float32)[:, 8:8 + dim]   # a padded product's output
    x_numba, x_native = x.copy(), x.copy()
    ops.add_rms_norm(x_numba, y, w, eps, want)
    ops_native.add_rms_norm(x_native, y, w, eps, got)
    assert same_bits(x_native, x_numba) and same_bits(got, want)
    # rows of a larger array (the final norm reads logits rows), and one token
    ops.rms_norm(x[1:2], w, eps, want[:1])
    ops_native.rms_norm(x[1:2], w, eps, got[:1])
    assert same_bits(got[:1], want[:1])


def test_rms_norm_eps_zero_on_a_zero_row():
    x, w = np.zeros((1, 20), np.float32), np.ones(20, np.float32)
    want, got = np.empty_like(x), np.empty_like(x)
    ops.rms_norm(x, w, 0.0, want)
    ops_native.rms_norm(x, w, 0.0, got)
    assert same_bits(got, want) and np.isnan(got).all()


def _qkv(n, hq, hkv, d, bias, fused, positions, table_rows, rng):
    widths = [hq * d, hkv * d, hkv * d]
    cuts = np.cumsum([0] + widths)
    stacked = (rng.standard_normal((n, cuts[-1] + 16)) * 3).astype(np.float32)
    if fused:
        sources = [stacked, int(cuts[0]), stacked, int(cuts[1]), stacked, int(cuts[2])]
    else:
        sources = [np.ascontiguousarray(stacked[:, a:b]) for a, b in zip(cuts, cuts[1:])]
        sources = [sources[0], 0, sources[1], 0, sources[2], 0]
    biases = [rng.standard_normal(w).astype(np.float32) if bias else np.zeros(0, np.float32) for w in widths]
    cos, sin = rope.rope_tables(10000.0, d, table_rows)
    outs = [[np.empty((n, h, d), np.float32) for h in (hq, hkv, hkv)] for _ in range(2)]
    ops.qkv_heads(*sources, *biases, positions, cos, sin, *outs[0])
    ops_native.qkv_heads(*sources, *biases, positions, cos, sin, *outs[1])
    return outs


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("hq,hkv,d", [(9, 3, 64), (2, 1, 6), (4, 2, 16), (3, 3, 34), (2, 2, 128)])
def test_qkv_heads(bias, fused, hq, hkv, d):
    positions = np.array([0, 1, 255, 300, 1023], np.int64)   # rows far into the RoPE table
    want, got = _qkv(5, hq, hkv, d, bias, fused, positions, 1024, np.random.default_rng([hq, d, bias, fused]))
    for a, b in zip(got, want):
        assert same_bits(a, b)


def test_qkv_heads_positions_of_another_int_type_and_one_token():
    for pos in (np.array([700], np.int32), np.array([3], np.int64)):
        want, got = _qkv(1, 9, 3, 64, True, True, pos, 1024, np.random.default_rng(1))
        assert all(same_bits(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("dim", (1, 7, 16, 17, 33, 1536))
def test_silu_mul(dim):
    n = 3
    g = (RNG.standard_normal((n, 2 * dim + 5)) * 10).astype(np.float32)
    edge = np.array([0.0, -0.0, 87.0, -87.0, 87.5, -87.5, 88.7, -88.7, 100.0, -100.0, 1e4, -1e4, 3e38, -3e38,
                     1e-40, -1e-40, np.inf, -np.inf, np.nan, -np.nan], np.float32)
    flat = g[:, :dim].reshape(-1)   # a copy: write back below
    flat[:min(len(edge), flat.size)] = edge[:flat.size]
    g[:, :dim] = flat.reshape(n, dim)
    want, got = np.empty((n, dim), np.float32), np.empty((n, dim), np.float32)
    ops.silu_mul(g, 0, g, dim + 5, want)      # gate and up read in place from one stacked output
    ops_native.silu_mul(g, 0, g, dim + 5, got)
    assert same_bits(got, want)
    gate, up = np.ascontiguousarray(g[:, 3:3 + dim]), np.ascontiguousarray(g[:, dim:2 * dim])
    ops.silu_mul(gate, 0, up, 0, want)
    ops_native.silu_mul(gate, 0, up, 0, got)
    assert same_bits(got, want)


@pytest.mark.parametrize("heads,d,bs", [(3, 64, 16), (2, 6, 8), (1, 17, 32)])
def test_write_kv(heads, d, bs):
    blocks, T = 6, 5
    pools = [RNG.standard_normal((blocks, heads, d, bs)).astype(np.float32),
             RNG.standard_normal((blocks, heads, bs, d)).astype(np.float32)]
    k, v = (RNG.standard_normal((T, heads, d)).astype(np.float32) for _ in range(2))
    # a draft tree's step: token 2 into two tails, slots out of token order; then one decode token
    for tok, blk, off in (([0, 1, 2, 2, 4, 3], [0, 0, 3, 5, 1, 1], [0, 1, 7 % bs, 7 % bs, bs - 1, 2]),
                          ([4], [2], [bs - 1])):
        tok, blk, off = np.array(tok, np.int64), np.array(blk, np.int32), np.array(off, np.int32)
        mine = [p.copy() for p in pools]
        attention.write_kv(*pools, k, v, tok, blk, off)
        ops_native.write_kv(*mine, k, v, tok, blk, off)
        assert same_bits(mine[0], pools[0]) and same_bits(mine[1], pools[1])


def test_no_tokens_and_one_column():
    """Empty batches (a step that wants no logits) and one-column rows, whatever NumPy's strides say."""
    x = np.ones((5, 8), np.float32)[np.zeros(0, np.int64)]
    w = np.ones(8, np.float32)
    out = np.empty_like(x)
    ops_native.rms_norm(x, w, 1e-5, out)
    ops_native.add_rms_norm(x, x, w, 1e-5, out)
    ops_native.silu_mul(x, 0, x, 0, out)
    e = np.zeros((0, 2, 4), np.float32)
    cos, sin = rope.rope_tables(1e4, 4, 4)
    ops_native.qkv_heads(x, 0, x, 0, x, 0, *[np.zeros(0, np.float32)] * 3, np.zeros(0, np.int64), cos, sin, e, e, e)
    col = np.arange(12, dtype=np.float32).reshape(4, 3)[:, 1:2]   # one column, element stride 12
    want, got = np.empty((4, 1), np.float32), np.empty((4, 1), np.float32)
    ops.rms_norm(col, w[:1], 1e-5, want)
    ops_native.rms_norm(col, w[:1], 1e-5, got)
    assert same_bits(got, want)


def test_layouts_the_ir_cannot_read_are_refused():
    x = np.zeros((2, 8), np.float32)
    out = np.empty_like(x)
    w = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="unit stride"):
        ops_native.rms_norm(x[:, ::2], w[:4], 1e-5, out[:, :4])
    with pytest.raises(ValueError, match="unit stride"):
        ops_native.add_rms_norm(x, x.astype(np.float64), w, 1e-5, out)
    with pytest.raises(ValueError, match="unit stride"):
        ops_native.silu_mul(x, 0, x[:, ::2], 0, out[:, :4])
    with pytest.raises(TypeError, match="float32"):
        sampling_native.weights(np.zeros(4, np.float32), 1.0, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="float32"):
        sampling_native.max_(np.zeros(4, np.float64))
    with pytest.raises(ValueError, match="contiguous"):
        sampling_native.kept_total(np.zeros(8, np.float32)[::2], 0.0)


def test_through_ctypes_when_the_builtin_is_unavailable(monkeypatch):
    """The fallback call path (native/bind.py: words packed by bind.word, floats included) gives the
    same bits."""
    from ponder.kernels import native

    monkeypatch.setattr(native.runtime(), "pycall", None)
    monkeypatch.setattr(ops_native, "_unit", None)
    assert ops_native.unit().call is not native.runtime().pycall
    x, w = activations(3, 33), RNG.standard_normal(33).astype(np.float32)
    want, got = np.empty_like(x), np.empty_like(x)
    ops.rms_norm(x, w, 1e-5, want)
    ops_native.rms_norm(x, w, 1e-5, got)
    assert same_bits(got, want)
    logits = logits_of(1000, RNG)
    inv = np.float32(1 / 0.7)
    w1, w2 = np.empty_like(logits), np.empty_like(logits)
    assert S.weights(logits, inv, w1) == sampling_native.weights(logits, inv, w2) and same_bits(w2, w1)
    assert S.walk(w1, 0.0, 3.5, np.float32(0.01)) == sampling_native.walk(w1, 0.0, 3.5, np.float32(0.01))


# -- the sampler's kernels ---------------------------------------------------------------------------

NS = (1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 33, 1000, 49152, 49157)


def logits_of(n, rng):
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    if n >= 9:
        x[rng.integers(0, n, max(1, n // 50))] = -np.inf
        x[3] = -1e30   # very negative: weight 0
        x[5] = np.float32(-np.finfo(np.float32).max)
    return x


@pytest.mark.parametrize("n", NS)
def test_max(n):
    rng = np.random.default_rng(n)
    x = logits_of(n, rng)
    assert same_bits(np.float32(sampling_native.max_(x)), np.float32(S.max_(x)))
    x[rng.integers(0, n, 3)] = np.nan   # never wins
    assert same_bits(np.float32(sampling_native.max_(x)), np.float32(S.max_(x)))
    z = np.where(rng.random(n) < 0.5, np.float32(0.0), np.float32(-0.0)).astype(np.float32)
    assert same_bits(np.float32(sampling_native.max_(z)), np.float32(S.max_(z)))   # which zero: the same one
    assert sampling_native.max_(np.zeros(0, np.float32)) == S.max_(np.zeros(0, np.float32)) == -np.inf


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("temperature", [1.0, 0.7, 1e-3, 100.0])
def test_weights(n, temperature):
    rng = np.random.default_rng([n, int(temperature * 1000)])
    x = logits_of(n, rng)
    inv = np.float32(1.0 / temperature)
    want, got = np.empty(n, np.float32), np.empty(n, np.float32)
    total_want = S.weights(x, inv, want)
    total_got = sampling_native.weights(x, inv, got)
    assert same_bits(got, want) and same_bits(np.float64(total_got), np.float64(total_want))
    x[::5] = np.nan   # log_softmax does not check: exp_neg(NaN) is NaN in both (Numba's max(x, -87))
    S.weights(x, inv, want)
    sampling_native.weights(x, inv, got)
    assert same_bits(got, want)


@pytest.mark.parametrize("n", (1, 9, 17, 1000, 49152))
@pytest.mark.parametrize("min_w", [np.float32(0.0), np.float32(0.05), np.float32(1.0), np.float32(2.0), 0.05])
def test_walk_and_kept_total(n, min_w):
    rng = np.random.default_rng([n, 7])
    w = np.empty(n, np.float32)
    total = S.weights(logits_of(n, rng), np.float32(1.0 / 0.8), w)
    kept = S.kept_total(w, min_w)
    assert same_bits(np.float64(sampling_native.kept_total(w, min_w)), np.float64(kept))
    for target in (-1.0, 0.0, *(rng.random(6) * kept), kept, 2 * total):
        assert sampling_native.walk(w, total, target, min_w) == S.walk(w, total, target, min_w), target


def test_sampler_draws_the_same_tokens_native_and_numba(monkeypatch):
    """engine/sampler.py on either kernel set: the same tokens and log-probabilities, bit for bit."""
    from ponder.engine.sampling_params import SamplingParams

    rng = np.random.default_rng(5)
    logits = [np.maximum(logits_of(n, rng), np.float32(-1e30)) for n in (9, 1000, 49152)]   # finite
    params = [SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m, seed=11)
              for t, k, p, m in ((1.0, 0, 1.0, 0.0), (0.7, 0, 1.0, 0.05), (0.9, 40, 0.9, 0.0), (1.3, 0, 0.95, 0.1))]

    def draws():
        out = []
        for x in logits:
            out.append(sampler.log_softmax(x).tobytes())
            out.append(sampler.token_logprob(x, len(x) - 1))
            out += [sampler.sample_token(x, p, i, 3 + i) for p in params for i in range(4)]
        return out
    monkeypatch.setattr(native, "active", False)
    assert sampler._kernels() is S
    want = draws()
    monkeypatch.setattr(native, "active", True)
    assert sampler._kernels() is sampling_native
    assert draws() == want


# -- the default model -------------------------------------------------------------------------------

@pytest.mark.real_model
def test_default_model_forward_and_sampling_native_as_numba(default_model, monkeypatch):
    """The default GGUF's forward pass (dim 576, inter 1536, 9/3 heads of 64; vocab 49152) with every
    serial kernel native (attention Numba's) gives the all-Numba logits bit for bit, and the sampler's
    kernels agree on those logits."""
    import dataclasses

    from ponder.engine.kv_cache import KVCache
    from ponder.model import kernel_set
    from ponder.model.fast_model import FastModel, StepInput

    tokens = default_model.tokenizer.encode("Question: what is 17 + 25? Answer step by step.")

    def run():
        model = FastModel(default_model.weights)
        c = model.config
        kv = KVCache(c.n_layers, c.n_kv_heads, c.head_dim, 8, 16)
        tables = np.arange(8, dtype=np.int32)[None, :]
        n = len(tokens)
        first = model.forward(StepInput(np.array(tokens), np.arange(n), np.zeros(n, np.int32), tables,
                                        np.arange(n)), kv.k, kv.v)
        nxt = model.forward(StepInput(np.array([int(np.argmax(first[-1]))]), np.array([n]), np.zeros(1, np.int32),
                                      tables, np.arange(1)), kv.k, kv.v)
        return np.concatenate([first, nxt])
    want = run()
    mixed = dataclasses.replace(kernel_set.numba_kernels(), name="native ops", **{
        k: getattr(ops_native, k) for k in ("rms_norm", "add_rms_norm", "qkv_heads", "silu_mul", "write_kv")})
    monkeypatch.setattr(kernel_set, "choose", lambda native, head_dim, block_size: mixed)
    got = run()
    assert same_bits(got, want)
    assert want.shape[1] == 49152
    for row in want[[0, -1]]:
        for temperature in (1.0, 0.6):
            inv = np.float32(1.0 / temperature)
            w1, w2 = np.empty_like(row), np.empty_like(row)
            t1, t2 = S.weights(row, inv, w1), sampling_native.weights(row, inv, w2)
            assert same_bits(w2, w1) and t1 == t2
            for min_w in (np.float32(0.0), np.float32(0.05)):
                kept = S.kept_total(w1, min_w)
                assert sampling_native.kept_total(w1, min_w) == kept
                for u in (0.0, 0.25, 0.999):
                    assert sampling_native.walk(w1, t1, u * kept, min_w) == S.walk(w1, t1, u * kept, min_w)


def test_the_ops_unit_names_no_instruction_set(monkeypatch):
    """One object serves every instruction set: the unit's IR is the same whatever PONDER_ISA says."""
    texts = []
    for isa in (None, "avx2", "scalar"):
        if isa is None:
            monkeypatch.delenv("PONDER_ISA", raising=False)
        else:
            monkeypatch.setenv("PONDER_ISA", isa)
        texts.append(str(build._module("ops", "x86_64-unknown-linux-gnu")))
    assert texts[0] == texts[1] == texts[2]
    assert all(f"@\"{ops_emit.entry_name(k)}\"(" in texts[0] for k in ops_emit.ARGS)
