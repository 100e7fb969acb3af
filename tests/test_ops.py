"""The per-token kernels of kernels/ops.py against plain NumPy: bit for bit where NumPy runs the same float32
operations, and the norm against float64."""

import numpy as np
import pytest

from ponder.kernels import ops, rope

RNG = np.random.default_rng(7)


def _rope_numpy(x, positions, cos, sin):
    """x: (T, heads, d) float32; the rotate_half convention, one float32 operation at a time."""
    half = x.shape[2] // 2
    a, b = x[..., :half], x[..., half:]
    c, s = cos[positions][:, None, :], sin[positions][:, None, :]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=2)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("fused", [True, False])
def test_qkv_heads_reads_a_stacked_product_in_place(bias, fused):
    n, heads, kv_heads, d = 5, 6, 2, 16
    widths = [heads * d, kv_heads * d, kv_heads * d]
    stacked = RNG.standard_normal((n, sum(widths) + 16)).astype(np.float32)  # padded, like a product's output
    cuts = np.cumsum([0] + widths)
    q_in, k_in, v_in = (stacked[:, a:b] for a, b in zip(cuts, cuts[1:]))
    sources = ([stacked, cuts[0], stacked, cuts[1], stacked, cuts[2]] if fused else  # one output, three columns
               [np.ascontiguousarray(q_in), 0, np.ascontiguousarray(k_in), 0, np.ascontiguousarray(v_in), 0])
    biases = [RNG.standard_normal(w).astype(np.float32) if bias else np.zeros(0, np.float32) for w in widths]
    positions = np.array([0, 3, 4, 9, 31], np.int64)
    cos, sin = rope.rope_tables(10000.0, d, 32)
    q, k, v = (np.empty((n, h, d), np.float32) for h in (heads, kv_heads, kv_heads))
    ops.qkv_heads(*sources, *biases, positions, cos, sin, q, k, v)

    def plus(x, b):
        return x + b if len(b) else x.copy()
    want_q = _rope_numpy(plus(q_in, biases[0]).reshape(n, heads, d), positions, cos, sin)
    want_k = _rope_numpy(plus(k_in, biases[1]).reshape(n, kv_heads, d), positions, cos, sin)
    want_v = plus(v_in, biases[2]).reshape(n, kv_heads, d)
    for got, want in ((q, want_q), (k, want_k), (v, want_v)):
        assert np.array_equal(got, want)


def test_add_rms_norm_is_the_add_then_the_norm():
    x = RNG.standard_normal((4, 96)).astype(np.float32)
    y_full = RNG.standard_normal((4, 128)).astype(np.float32)
    y = y_full[:, 16:112]  # a strided view, as a product's output slice is
    w = RNG.standard_normal(96).astype(np.float32)
    want_x = x + y
    want = np.empty_like(x)
    ops.rms_norm(want_x, w, 1e-5, want)
    got = np.empty_like(x)
    ops.add_rms_norm(x, y, w, 1e-5, got)
    assert np.array_equal(x, want_x) and np.array_equal(got, want)
    x64 = want_x.astype(np.float64)
    ref = x64 / np.sqrt((x64 ** 2).mean(axis=1, keepdims=True) + 1e-5) * w
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_silu_mul_in_place_equals_on_copies():
    y = RNG.standard_normal((3, 2 * 40)).astype(np.float32) * 6
    gate, up = y[:, :40], y[:, 40:]
    got, want = np.empty((3, 40), np.float32), np.empty((3, 40), np.float32)
    ops.silu_mul(y, 0, y, 40, got)
    ops.silu_mul(np.ascontiguousarray(gate), 0, np.ascontiguousarray(up), 0, want)
    assert np.array_equal(got, want)
    g64 = gate.astype(np.float64)
    np.testing.assert_allclose(got, g64 / (1 + np.exp(-g64)) * up, rtol=1e-5, atol=1e-6)
