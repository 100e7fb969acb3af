"""The quantized matmul kernels: every back end bit for bit against the scalar oracle (and so
against each other), at any batch size and thread count, on every format and activation
width; accuracy against float64; the instruction-set selection."""

import functools
import os
import subprocess
import sys

import numba
import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize

from ponder.kernels import isa as ISA
from ponder.kernels import qmatmul as Q
from ponder.kernels.quant_formats import dequantize

FORMATS = {"Q4_1": Q.FMT_Q4_1, "Q4_0": Q.FMT_Q4_0, "Q8_0": Q.FMT_Q8_0}
# 40 rows: padded to a partial row group; K=64: two blocks; the others: SmolLM2 shapes
SHAPES = [(40, 64), (192, 576), (576, 1536)]
BITS = [8, 16]
M = 37   # 4 tiles of 8 + 4 + 1, 6 tiles of 6 + 1, 9 tiles of 4 + 1: every tile size
ZERO_TOKEN = 3
SIMD = [n for n in ISA.NAMES if n != "scalar"]

CASES = [(f, r, k, b) for f in FORMATS for (r, k) in SHAPES for b in BITS]
IDS = [f"{f}-{r}x{k}-q{b}" for f, r, k, b in CASES]


def need(isa):
    if not ISA.supported(isa):
        pytest.skip(f"this CPU cannot run {isa}")


@functools.lru_cache(maxsize=None)
def weights(fmt, rows, K):
    """(raw GGUF bytes, float64 dequantized W, x [M, K] float32)."""
    rng = np.random.default_rng([rows, K, list(FORMATS).index(fmt)])
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[ZERO_TOKEN] = 0.0
    x[5, :32] = 0.0                        # one zero block
    x[7, 10] = 40.0                        # an outlier: one block with a large scale
    w = (rng.standard_normal((rows, K)) * 0.05).astype(np.float32)
    # a row parallel to token 1: large block sums (for Q8_0 in q16 mode beyond 2**24,
    # where the int -> float32 conversion rounds)
    w[0] = x[1] * 0.05
    w[1] = -x[1] * 0.05                    # and its negative: Q8_0 quants of -127/-128
    raw = gguf_quantize(w, GGMLQuantizationType[fmt])
    return raw, dequantize(fmt, raw, rows, K).astype(np.float64), x


@functools.lru_cache(maxsize=None)
def packed(fmt, rows, K, isa):
    return Q.from_gguf(FORMATS[fmt], weights(fmt, rows, K)[0], rows, K, isa=isa)


@functools.lru_cache(maxsize=None)
def reference(fmt, rows, K, bits):
    """(activations, the scalar oracle's output): what every back end must give."""
    x = weights(fmt, rows, K)[2]
    a = Q.quantize(x, bits=bits)
    return a, Q.matmul_scalar(packed(fmt, rows, K, "scalar"), a).copy()


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("fmt,rows,K,bits", CASES, ids=IDS)
def test_back_end_matches_oracle(isa, fmt, rows, K, bits):
    need(isa)
    a, ref = reference(fmt, rows, K, bits)
    W = packed(fmt, rows, K, isa)
    y = Q.matmul(W, a)
    assert same_bits(y, ref)
    assert same_bits(Q.matmul_scalar(W, a), ref)   # the oracle is the same on every layout
    assert np.all(y[ZERO_TOKEN] == 0.0)


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("fmt,rows,K,bits", [c for c in CASES if c[1] != 576], ids=[i for i, c in zip(IDS, CASES)
                                                                                  if c[1] != 576])
def test_any_batch_size_gives_the_same_bits(isa, fmt, rows, K, bits):
    need(isa)
    x = weights(fmt, rows, K)[2]
    W = packed(fmt, rows, K, isa)
    _, y = reference(fmt, rows, K, bits)
    alone = np.concatenate([Q.matmul(W, Q.quantize(x[i], bits=bits)) for i in range(M)])
    assert same_bits(alone, y)
    for n in (2, 3, 5, 7, 8, 9, 15, 16, 17):
        assert same_bits(Q.matmul(W, Q.quantize(x[:n], bits=bits)), y[:n]), f"prefix of {n}"


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("bits", BITS)
def test_thread_count_gives_the_same_bits(isa, bits):
    need(isa)
    fmt, rows, K = "Q4_1", 192, 576
    x = weights(fmt, rows, K)[2]
    W = packed(fmt, rows, K, isa)
    a, y = reference(fmt, rows, K, bits)
    numba.set_num_threads(1)
    try:
        y1 = Q.matmul(W, Q.quantize(x, bits=bits)).copy()
        ys1 = Q.matmul_scalar(W, a).copy()
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert same_bits(y1, y)
    assert same_bits(ys1, y)


@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_extreme_activations_and_weights(isa, fmt):
    """The saturation bounds of the int16 back end at their limits: activations of
    +-127 in both q16 halves, weights at 0/15 (Q4) and -128/127 (Q8_0)."""
    need(isa)
    rows, K = 16, 64
    rng = np.random.default_rng(3)
    nb = K // 32
    if fmt == "Q8_0":
        q = rng.choice(np.array([-128, 127, -127, 0], np.int8), (rows, K))
    else:
        q = rng.choice(np.array([0, 15], np.uint8), (rows, K))
    d = np.full((rows, nb), 0.5, np.float16)
    m = np.full((rows, nb), -0.25, np.float16) if fmt == "Q4_1" else None
    x = np.where(rng.random((4, K)) < 0.5, -1.0, 1.0).astype(np.float32) * 3.0   # every |q| = qmax
    x[1] = -3.0
    for bits in BITS:
        a = Q.quantize(x, bits=bits)
        ref = Q.matmul_scalar(Q.pack(FORMATS[fmt], q, d, m, isa="scalar"), a)
        assert same_bits(Q.matmul(Q.pack(FORMATS[fmt], q, d, m, isa=isa), a), ref)
        # and the oracle is right: the exact product of the dequantized values
        w = d.astype(np.float64).repeat(32, 1) * (q.astype(np.float64) - (8 if fmt == "Q4_0" else 0))
        if m is not None:
            w += m.astype(np.float64).repeat(32, 1)
        xq = a.values * np.repeat(a.dx.astype(np.float64), 32, axis=1)
        np.testing.assert_allclose(ref, xq @ w.T, rtol=1e-6, atol=1e-4)


# Relative L2 error of each token's output vector against float64 with the exact x.
# It is the activation quantization error: about 1/127 resp. 1/16383 of each block's
# amax per element.  Measured maxima on these cases: q8 1.3e-2, q16 1.4e-4.
TOLERANCE = {8: 3e-2, 16: 3e-4}


@pytest.mark.parametrize("fmt,rows,K,bits", CASES, ids=IDS)
def test_accuracy_against_float64(fmt, rows, K, bits):
    _, w64, x = weights(fmt, rows, K)
    a, y = reference(fmt, rows, K, bits)
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
    x[2, :32] = 1e-44                      # a subnormal block: clamped, never wrapped
    a = Q.quantize(x, bits=bits)
    qmax = 127 if bits == 8 else Q.Q16_MAX
    q = a.values
    # every int8 the kernels see is in [-127, 127] (the AVX2 bounds rely on it)
    assert np.abs(a.qx.astype(np.int32)).max() <= 127
    if bits == 16:
        assert np.abs(a.ql.astype(np.int32)).max() <= 127
        assert np.all((a.qx == 0) | (a.ql == 0) | (np.sign(a.qx) == np.sign(a.ql)))
    assert np.abs(q).max() == qmax
    assert np.array_equal(a.sx, q.reshape(5, 3, 32).sum(2))
    assert np.array_equal(a.dxs, a.dx * a.sx.astype(np.float32))
    assert np.all(q[0] == 0) and np.all(a.dx[0] == 0)
    xb, d = x.reshape(5, 3, 32)[[0, 1, 3, 4]], a.dx[[0, 1, 3, 4], :, None]
    expect = np.sign(xb) * np.floor(np.abs((xb / np.where(d > 0, d, 1)).astype(np.float64)) + 0.5)
    assert np.array_equal(q.reshape(5, 3, 32)[[0, 1, 3, 4]], expect.astype(np.int32))
    assert Q.quantize(x, out=a, bits=bits) is a
    with pytest.raises(ValueError):
        Q.quantize(x, out=a, bits=24 - bits)


@pytest.mark.parametrize("isa", SIMD + ["scalar"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_linear16_equals_quantize_then_matmul(isa, fmt):
    """The one-call path gives the same bits as quantize() + matmul()."""
    need(isa)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((40, 96)).astype(np.float32)
    raw = gguf_quantize(w, GGMLQuantizationType[fmt])
    W = Q.from_gguf(FORMATS[fmt], raw, 40, 96, isa=isa)
    for m in (1, 5, 17):
        x = rng.standard_normal((m, 96)).astype(np.float32)
        assert same_bits(Q.linear16(W, x), Q.matmul(W, Q.quantize(x, bits=16)))


def test_isa_selection():
    avail = ISA.available()
    assert avail[-2:] == ["portable", "scalar"]
    assert ISA.current() in avail
    for name in ISA.NAMES:
        assert ISA.layout_id(name) == f"rows{ISA.lanes(name)}.v{ISA.LAYOUT_VERSION}"
    assert ISA.lanes("avx512_vnni") == 16 and ISA.lanes("avx2") == 8
    # AVX2 without F16C, or nothing: only the portable code
    assert not ISA.supported("avx2", frozenset({"avx2"}))
    assert ISA.supported("avx_vnni", frozenset({"avx2", "f16c", "avxvnni"}))
    assert not ISA.supported("avx512_vnni", frozenset({"avx2", "f16c", "avxvnni"}))
    with pytest.raises(ISA.UnsupportedISAError):
        ISA.backend("sse9")


def _run_with_isa(value):
    code = "from ponder.kernels import isa; print(isa.current())"
    env = dict(os.environ, PONDER_ISA=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_ponder_isa_forces_and_validates():
    r = _run_with_isa("portable")
    assert r.returncode == 0 and r.stdout.strip() == "portable"
    r = _run_with_isa("sse9")
    assert r.returncode != 0 and "PONDER_ISA='sse9'" in r.stderr
    missing = [n for n in ISA.NAMES if not ISA.supported(n)]
    if missing:
        r = _run_with_isa(missing[0])
        assert r.returncode != 0 and "cannot run" in r.stderr


def test_kernels_of_each_isa_have_their_own_cache_name():
    """A kernel compiled for one instruction set is never loaded for another."""
    names = {Q.kernel(i, Q.FMT_Q4_1, 16).py_func.__qualname__ for i in ISA.available() if i != "scalar"}
    assert len(names) == len(ISA.available()) - 1


# A back end the CPU cannot run is still compiled, for a CPU that has it, and its code checked:
# the instructions it is written for, no wider registers than its set has.
COMPILE_CHECKS = [("avx512_vnni", "znver4", "vpdpbusd", "zmm"),
                  ("avx_vnni", "alderlake", "vpdpbusd", "ymm"),
                  ("avx2", "znver3", "vpmaddubsw", "ymm")]


@pytest.mark.parametrize("isa,cpu,instr,reg", COMPILE_CHECKS)
def test_back_end_compiles_for_its_cpu(isa, cpu, instr, reg):
    import llvmlite.binding as llvm
    from llvmlite import ir

    from ponder.kernels.qmm_emit import _emit_group

    for fmt in (Q.FMT_Q4_1, Q.FMT_Q8_0):
        m = ir.Module()
        i64 = ir.IntType(64)
        fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [i64] * 11), "kern")
        b = ir.IRBuilder(fn.append_basic_block())
        _emit_group(b, ISA.backend(isa), fmt, 16, *fn.args)
        b.ret_void()
        mod = llvm.parse_assembly(str(m))
        mod.verify()
        tm = llvm.Target.from_triple("x86_64-unknown-linux-gnu").create_target_machine(cpu=cpu, opt=2)
        asm = tm.emit_assembly(mod)
        assert instr in asm
        assert reg in asm
        if reg == "ymm":
            assert "zmm" not in asm
        if isa == "avx_vnni":
            assert "{vex}\tvpdpbusd" in asm   # the VEX form of Intel client chips, not AVX-512's
