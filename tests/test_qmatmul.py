"""The quantized matmul kernels: bit-exactness (SIMD vs scalar, any batch size,
any thread count, VNNI vs portable IR) and accuracy against float64."""

import functools
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize

from ponder.kernels import qmatmul as Q
from ponder.kernels.quant_formats import dequantize

FORMATS = {"Q4_1": Q.FMT_Q4_1, "Q4_0": Q.FMT_Q4_0, "Q8_0": Q.FMT_Q8_0}
# 40 rows: padded to a partial row group; K=64: two blocks; the others: SmolLM2 shapes
SHAPES = [(40, 64), (192, 576), (576, 1536)]
BITS = [8, 16]
M = 37   # 4 tiles of 8 + 4 + 1: every tile size
ZERO_TOKEN = 3

CASES = [(f, r, k, b) for f in FORMATS for (r, k) in SHAPES for b in BITS]
IDS = [f"{f}-{r}x{k}-q{b}" for f, r, k, b in CASES]


@functools.lru_cache(maxsize=None)
def weights(fmt, rows, K):
    """(raw GGUF bytes, packed QMatrix, float64 dequantized W, x [M, K] float32)."""
    rng = np.random.default_rng([rows, K, list(FORMATS).index(fmt)])
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[ZERO_TOKEN] = 0.0
    x[5, :32] = 0.0                        # one zero block
    x[7, 10] = 40.0                        # an outlier: one block with a large scale
    w = (rng.standard_normal((rows, K)) * 0.05).astype(np.float32)
    # a row parallel to token 1: large block sums (for Q8_0 in q16 mode beyond 2**24,
    # where the int -> float32 conversion rounds)
    w[0] = x[1] * 0.05
    raw = gguf_quantize(w, GGMLQuantizationType[fmt])
    W = Q.from_gguf(FORMATS[fmt], raw, rows, K)
    return raw, W, dequantize(fmt, raw, rows, K).astype(np.float64), x


@functools.lru_cache(maxsize=None)
def product(fmt, rows, K, bits):
    _, W, _, x = weights(fmt, rows, K)
    a = Q.quantize(x, bits=bits)
    return a, Q.matmul(W, a).copy()


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("fmt,rows,K,bits", CASES, ids=IDS)
def test_simd_matches_scalar(fmt, rows, K, bits):
    a, y = product(fmt, rows, K, bits)
    assert same_bits(y, Q.matmul_scalar(weights(fmt, rows, K)[1], a))
    assert np.all(y[ZERO_TOKEN] == 0.0)


@pytest.mark.parametrize("fmt,rows,K,bits", CASES, ids=IDS)
def test_any_batch_size_gives_the_same_bits(fmt, rows, K, bits):
    _, W, _, x = weights(fmt, rows, K)
    _, y = product(fmt, rows, K, bits)
    alone = np.concatenate([Q.matmul(W, Q.quantize(x[i], bits=bits)) for i in range(M)])
    assert same_bits(alone, y)
    for n in (2, 3, 5, 7, 8, 9, 15, 16, 17):
        assert same_bits(Q.matmul(W, Q.quantize(x[:n], bits=bits)), y[:n]), f"prefix of {n}"


@pytest.mark.parametrize("fmt,rows,K,bits", CASES, ids=IDS)
def test_thread_count_gives_the_same_bits(fmt, rows, K, bits):
    _, W, _, x = weights(fmt, rows, K)
    a, y = product(fmt, rows, K, bits)
    numba.set_num_threads(1)
    try:
        y1 = Q.matmul(W, Q.quantize(x, bits=bits)).copy()
        ys1 = Q.matmul_scalar(W, a).copy()
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert same_bits(y1, y)
    assert same_bits(ys1, y)


# Relative L2 error of each token's output vector against float64 with the exact x.
# It is the activation quantization error: about 1/127 resp. 1/16383 of each block's
# amax per element.  Measured maxima on these cases: q8 1.3e-2, q16 1.4e-4.
TOLERANCE = {8: 3e-2, 16: 3e-4}


@pytest.mark.parametrize("fmt,rows,K,bits", CASES, ids=IDS)
def test_accuracy_against_float64(fmt, rows, K, bits):
    _, _, w64, x = weights(fmt, rows, K)
    a, y = product(fmt, rows, K, bits)
    nz = np.abs(x).max(axis=1) > 0

    def rel_err(ref):
        return np.linalg.norm(y[nz] - ref[nz], axis=1) / np.linalg.norm(ref[nz], axis=1)

    assert rel_err(x.astype(np.float64) @ w64.T).max() < TOLERANCE[bits]
    # against the quantized x, only the float32 chain is left (its rounding, and for Q4_1
    # that of dequantize's float32 d*q + m): measured 5e-7
    xq = a.values * np.repeat(a.dx.astype(np.float64), Q.QK, axis=1)
    assert rel_err(xq @ w64.T).max() < 1e-5


@pytest.mark.parametrize("bits", BITS)
def test_quantize(bits):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 96)).astype(np.float32)
    x[0] = 0.0
    x[1, 40] = -1e4
    a = Q.quantize(x, bits=bits)
    qmax = 127 if bits == 8 else Q.Q16_MAX
    q = a.values
    if bits == 16:
        assert a.ql.min() >= 0 and a.ql.max() <= 127
    assert np.abs(q).max() == qmax
    assert np.array_equal(a.sx, q.reshape(5, 3, 32).sum(2))
    assert np.array_equal(a.dxs, a.dx * a.sx.astype(np.float32))
    assert np.all(q[0] == 0) and np.all(a.dx[0] == 0)
    xb, d = x.reshape(5, 3, 32), a.dx[..., None]
    expect = np.sign(xb) * np.floor(np.abs((xb / np.where(d > 0, d, 1)).astype(np.float64)) + 0.5)
    assert np.array_equal(q.reshape(5, 3, 32), expect.astype(np.int32))
    assert Q.quantize(x, out=a, bits=bits) is a
    with pytest.raises(ValueError):
        Q.quantize(x, out=a, bits=24 - bits)


def all_outputs():
    return {i: product(f, r, k, b)[1] for i, (f, r, k, b) in zip(IDS, CASES)}


@pytest.mark.skipif(not Q.HAS_VNNI, reason="this host runs the portable IR already")
def test_portable_ir_matches_vnni(tmp_path):
    # HAS_VNNI is decided at import and the Numba cache does not see it, hence a fresh
    # process with its own cache directory.
    out = tmp_path / "portable.npz"
    env = dict(os.environ, PONDER_QMM_NO_VNNI="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import test_qmatmul as T; "
            "assert not T.Q.HAS_VNNI; np.savez(sys.argv[2], **T.all_outputs())")
    subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(out)], env=env, check=True)
    portable = np.load(out)
    for key, y in all_outputs().items():
        assert same_bits(portable[key], y), key


@pytest.mark.parametrize("fmt", ["Q4_1", "Q4_0", "Q8_0"])
def test_linear16_equals_quantize_then_matmul(fmt):
    """The one-call path gives the same bits as quantize() + matmul()."""
    import gguf

    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 96)).astype(np.float32)
    raw = gguf.quants.quantize(w, gguf.GGMLQuantizationType[fmt])
    W = Q.from_gguf({"Q4_1": Q.FMT_Q4_1, "Q4_0": Q.FMT_Q4_0, "Q8_0": Q.FMT_Q8_0}[fmt], raw, 40, 96)
    for m in (1, 5, 17):
        x = rng.standard_normal((m, 96)).astype(np.float32)
        np.testing.assert_array_equal(Q.linear16(W, x), Q.matmul(W, Q.quantize(x, bits=16)))
