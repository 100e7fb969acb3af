"""The native kernel runtime (kernels/native): its products and quantizers bit for bit against the
Numba kernels and the scalar oracle on every back end this CPU can run, its thread pool (item
counts, thread counts, parked workers, concurrent callers, exit), and its object cache."""

import ctypes
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize

from ponder.kernels import act_quant, act_quant_emit, compile_events, native, qmm_emit, qmm_native
from ponder.kernels import isa as ISA
from ponder.kernels import qmatmul as Q
from ponder.kernels.native import bind, build, cache, pool

FORMATS = {"Q4_1": Q.FMT_Q4_1, "Q4_0": Q.FMT_Q4_0, "Q8_0": Q.FMT_Q8_0}
MS = (1, 2, 3, 4, 8, 17, 64)
SIMD = [n for n in ISA.NAMES if n != "scalar"]


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def need(isa):
    if not ISA.supported(isa):
        pytest.skip(f"this CPU cannot run {isa}")


def inputs(M, K, seed=0):
    """Activations with the quantizer's edge cases: a zero token, a zero block, an outlier, exact
    halves (x/d = k + 0.5), tiny and subnormal values."""
    rng = np.random.default_rng([M, K, seed])
    x = rng.standard_normal((M, K)).astype(np.float32)
    x[0, :32] = 0.0
    if M > 1:
        x[1] = 0.0
        x[1, 40] = 3.0
    x[-1, 5] = 40.0
    if K >= 128:
        x[-1, 64:96] = np.arange(32, dtype=np.float32) * 0.5   # halves after scaling by d
        x[0, 96:128] = np.float32(1e-40) * np.arange(32, dtype=np.float32)  # subnormal block
    return x


_PACKED = {}


def packed(fmt, rows, K, isa):
    key = (fmt, rows, K, isa)
    if key not in _PACKED:
        rng = np.random.default_rng([rows, K, list(FORMATS).index(fmt)])
        w = (rng.standard_normal((rows, K)) * 0.05).astype(np.float32)
        w[0] = 1.0
        w[1] = -1.0   # Q8_0 quants of +-127/-128
        raw = gguf_quantize(w, GGMLQuantizationType[fmt])
        _PACKED[key] = (Q.from_gguf(FORMATS[fmt], raw, rows, K, isa=isa),
                        Q.from_gguf(FORMATS[fmt], raw, rows, K, isa="scalar"))
    return _PACKED[key]


@pytest.fixture(autouse=True)
def native_products(monkeypatch):
    """The runtime is off by default (kernels/native/__init__.py): these tests turn it on."""
    monkeypatch.setattr(native, "active", True)


@pytest.fixture
def numba_products(monkeypatch):
    """Run qmatmul's products on their Numba drivers inside the block."""
    class Switch:
        def __enter__(self):
            monkeypatch.setattr(native, "active", False)

        def __exit__(self, *exc):
            monkeypatch.setattr(native, "active", True)
    return Switch()


# -- the products ---------------------------------------------------------------------------------

@pytest.mark.parametrize("isa", SIMD)
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_products_match_oracle_on_every_back_end(isa, fmt):
    need(isa)
    assert native.active
    W, ref_w = packed(fmt, 72, 576, isa)   # 72 rows: a partial row group on every lane count
    for M in MS:
        x = inputs(M, 576)
        for bits in (8, 16):
            a = Q.quantize(x, bits=bits)
            ref = Q.matmul_scalar(ref_w, a)
            assert same_bits(Q.matmul(W, a), ref), (M, bits)
        assert same_bits(Q.linear16(W, x), Q.matmul_scalar(ref_w, Q.quantize(x, bits=16))), M


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_products_match_the_numba_kernels(fmt, numba_products):
    """This process's back end: native against Numba (products, and linear16's fused quantizer)."""
    isa = ISA.current()
    if isa == "scalar":
        pytest.skip("no generated kernels on the scalar set")
    W, _ = packed(fmt, 200, 64, isa)
    for M in MS:
        x = inputs(M, 64, seed=1)
        acts = [Q.quantize(x, bits=b) for b in (8, 16)]
        mine = [Q.matmul(W, a).copy() for a in acts] + [Q.linear16(W, x).copy()]
        with numba_products:
            theirs = [Q.matmul(W, a).copy() for a in acts] + [Q.linear16(W, x).copy()]
        assert all(same_bits(a, b) for a, b in zip(mine, theirs)), M


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_thread_count_gives_the_same_bits(threads):
    isa = ISA.current()
    if isa == "scalar":
        pytest.skip("no generated kernels on the scalar set")
    W, ref_w = packed("Q4_1", 576, 576, isa)
    x = inputs(17, 576)
    ref = Q.matmul_scalar(ref_w, Q.quantize(x, bits=16))
    before = native.set_threads(threads)
    try:
        assert same_bits(Q.linear16(W, x), ref)
        assert same_bits(Q.linear16(W, x[:1]), ref[:1])
    finally:
        native.set_threads(before)


@pytest.mark.parametrize("bits", [8, 16])
def test_quantizer_matches_numba(bits):
    """The IR quantizer, run alone through the runtime, writes exactly act_quant's bits."""
    isa = ISA.current()
    if isa == "scalar":
        pytest.skip("no generated kernels on the scalar set")
    x = inputs(9, 256)
    x[3, 200] = np.float32(np.finfo(np.float32).max)
    x[4, 32:64] = -np.float32(np.finfo(np.float32).tiny)
    ref = Q.quantize(x, bits=bits)
    mine = act_quant.QAct(9, 256, bits)
    ql = mine.ql if bits == 16 else mine.qx
    vals = {"x": x.ctypes.data, "xrs": x.strides[0], "xh": mine.qx.ctypes.data, "xl": ql.ctypes.data,
            "xs": mine.qx.strides[0], "dx": mine.dx.ctypes.data, "dxs": mine.dxs.ctypes.data,
            "sx": mine.sx.ctypes.data, "ss": mine.dx.strides[0], "nb": 256 // 32}
    argv = np.array([vals.get(n, 0) for n in qmm_emit.ARGS], np.int64)
    native.run(act_quant_emit.item_name(bits, isa), isa, argv, 9, 2)
    for name in ("qx", "ql", "dx", "dxs", "sx") if bits == 16 else ("qx", "dx", "dxs", "sx"):
        assert np.array_equal(getattr(mine, name).view(np.uint8), getattr(ref, name).view(np.uint8)), name


@pytest.mark.real_model
def test_real_model_products_native_numba_oracle(default_model, numba_products):
    """Layer 0's matrices and the output head of the default GGUF: native = Numba = oracle, every set."""
    layer = dict(default_model.weights.layers[0].matrices())
    tensors = [layer["wq"], layer["w_down"], default_model.weights.output]
    fmts = {"Q4_0": Q.FMT_Q4_0, "Q4_1": Q.FMT_Q4_1, "Q8_0": Q.FMT_Q8_0}
    for t in tensors:
        ref_w = Q.from_gguf(fmts[t.fmt], t.data, t.rows, t.cols, isa="scalar")
        for M in (1, 4, 17):
            x = np.random.default_rng(M).standard_normal((M, t.cols)).astype(np.float32)
            ref = Q.matmul_scalar(ref_w, Q.quantize(x, bits=16))
            for isa in ISA.available():
                if isa == "scalar":
                    continue
                W = Q.from_gguf(fmts[t.fmt], t.data, t.rows, t.cols, isa=isa)
                assert same_bits(Q.linear16(W, x), ref), (t.name, M, isa)
                if isa == ISA.current() and M == 4:
                    with numba_products:
                        assert same_bits(Q.linear16(W, x), ref), (t.name, "numba")


def test_products_through_ctypes_when_the_builtin_is_unavailable(monkeypatch):
    """The fallback path (an interpreter whose object layout py_call does not read) gives the same bits."""
    isa = ISA.current()
    if isa == "scalar":
        pytest.skip("no generated kernels on the scalar set")
    rt = native.runtime()
    assert rt.pycall is not None   # CPython 3 with NumPy: the builtin is there
    W, ref_w = packed("Q8_0", 72, 576, isa)
    x = inputs(5, 576)
    monkeypatch.setattr(rt, "pycall", None)
    assert same_bits(Q.linear16(W, x), Q.matmul_scalar(ref_w, Q.quantize(x, bits=16)))
    a = Q.quantize(x, bits=8)
    assert same_bits(Q.matmul(W, a), Q.matmul_scalar(ref_w, a))


def test_builtin_rejects_what_it_cannot_read():
    rt = native.runtime()
    probe = rt.address("py_call_probe", "pool")
    out = np.zeros(4, np.int64)
    for bad in ([1j], ["x"], [np.int64(3)], [np.float16(1)], [True], [np.zeros(2, np.float32).view(np.matrix)],
                [0] * 65):
        with pytest.raises(TypeError):
            rt.pycall(probe, out.ctypes.data, len(bad), *bad)
    with pytest.raises(OverflowError):
        rt.pycall(probe, out.ctypes.data, 1, 1 << 70)
    with pytest.raises(TypeError):
        rt.pycall(probe, out.ctypes.data)
    a = np.arange(3.0)
    rt.pycall(probe, out.ctypes.data, 3, -1, a, 1 << 40)
    assert out[:3].tolist() == [-1, a.ctypes.data, 1 << 40]


def test_builtin_passes_floats_as_their_double_bits():
    """Python floats, numpy.float64 and numpy.float32 go in as the IEEE bits of the double of their
    value (float32 widened exactly); bind.word (the ctypes fallback's words) gives the same."""
    rt = native.runtime()
    probe = rt.address("py_call_probe", "pool")
    f32 = np.array([0.1, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38], np.float32)
    floats = [1.5, -0.0, float("inf"), float("-inf"), 1e-310, 1e-5, np.float64(-2.25), np.float64(np.pi), *f32]
    arr = np.zeros(2)
    vals = [*floats, 7, arr]
    want = np.array([float(v) for v in floats]).view(np.int64).tolist() + [7, arr.ctypes.data]
    out = np.zeros(len(vals), np.int64)
    rt.pycall(probe, out.ctypes.data, len(vals), *vals)
    assert out.tolist() == want
    assert [bind.word(v) for v in vals] == want
    with pytest.raises(TypeError):
        bind.word(np.int64(1))


# -- the pool -------------------------------------------------------------------------------------

def count_job(rt, n, threads):
    """Run pool_count over n items; the per-item counts."""
    counts = np.zeros(max(n, 1), np.int64)
    argv = np.array([counts.ctypes.data, 0], np.int64)
    rt.run(rt.address("pool_count", "pool"), argv, n, threads)
    assert argv[1] == n
    return counts[:n]


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_every_item_runs_once(threads):
    rt = native.runtime()
    for n in (0, 1, 2, 3, 5, 64, 1000):
        assert np.all(count_job(rt, n, threads) == 1), n


def test_consecutive_jobs_never_mix_their_arguments():
    """Thousands of back-to-back jobs, each counting into its own array: an item run with another
    job's arguments would show as a 2 in one array and a 0 in the next."""
    rt = native.runtime()
    for k in range(3000):
        assert np.all(count_job(rt, 1 + k % 7, 2) == 1), k


def test_job_after_the_workers_parked():
    rt = native.runtime()
    parks = rt.state[pool.PARKS]
    count_job(rt, 8, 2)
    time.sleep(0.05)
    deadline = time.monotonic() + 5   # a loaded machine may not schedule the worker within 50 ms
    while rt.state[pool.SLEEPERS] < len(rt._workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rt.state[pool.PARKS] > parks and rt.state[pool.SLEEPERS] == len(rt._workers)   # parked on the futex
    assert np.all(count_job(rt, 8, 2) == 1)
    assert np.all(count_job(rt, 3, 4) == 1)


def test_two_python_threads_at_once():
    rt = native.runtime()
    errors = []

    def caller(seed):
        try:
            for k in range(300):
                n = 1 + (k * seed) % 13
                if not np.all(count_job(rt, n, 2) == 1):
                    errors.append((seed, k))
        except Exception as e:   # reported below: an exception in a thread would pass silently
            errors.append(e)

    _run_threads(caller, (3, 5))
    assert not errors


def test_products_from_two_python_threads():
    isa = ISA.current()
    if isa == "scalar":
        pytest.skip("no generated kernels on the scalar set")
    W, ref_w = packed("Q4_1", 192, 576, isa)
    xs = [inputs(m, 576) for m in (1, 5)]
    refs = [Q.matmul_scalar(ref_w, Q.quantize(x, bits=16)) for x in xs]
    bad = []

    def caller(i):
        for _ in range(100):
            if not same_bits(Q.linear16(W, xs[i]), refs[i]):
                bad.append(i)

    _run_threads(caller, (0, 1))
    assert not bad


def _run_threads(target, args):
    """target(a) on one Python thread per a, all at once; returns when every one has ended."""
    ts = [threading.Thread(target=target, args=(a,)) for a in args]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


_EXIT = """
import time, numpy as np
from ponder.kernels import native
rt = native.runtime()
counts = np.zeros(4, np.int64)
argv = np.array([counts.ctypes.data, 0], np.int64)
rt.run(rt.address("pool_count", "pool"), argv, 4, 3)
time.sleep(0.1)
from ponder.kernels.native import pool
assert rt.state[pool.SLEEPERS] == 2, rt.state[pool.SLEEPERS]
print("parked", int(counts.sum()))
"""


def test_interpreter_exits_with_parked_workers(tmp_path):
    r = subprocess.run([sys.executable, "-c", _EXIT], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "parked 4"


# -- the object cache ------------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    return tmp_path


def fresh_load(unit="pool"):
    """Load a unit into a new runtime; (status, whether a compile happened)."""
    compiled = []
    compile_events.listeners.append(lambda u, s: compiled.append((u, s)))
    try:
        rt = bind.Runtime()
        status = rt.load(unit)
        assert np.all(count_job(rt, 5, 1) == 1)   # and the loaded code runs
        return status, bool(compiled)
    finally:
        compile_events.listeners.pop()


def test_cache_used_on_second_load(home):
    assert fresh_load() == ("compiled (missing)", True)
    assert list((home / "kernels").iterdir())
    assert fresh_load() == ("hit", False)


def test_cache_invalidated_when_the_sources_change(home, monkeypatch):
    fresh_load()
    monkeypatch.setattr(build, "source_hash", lambda: "0123456789abcdef")
    assert fresh_load() == ("compiled (missing)", True)
    assert fresh_load() == ("hit", False)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "key"])
def test_damaged_cache_file_is_rebuilt(home, damage):
    fresh_load()
    path = cache.path(build.key("pool"))
    blob = bytearray(open(path, "rb").read())
    if damage == "truncate":
        blob = blob[:len(blob) - 100]
    elif damage == "flip":
        blob[-50] ^= 0x10
    elif damage == "garbage":
        blob = bytearray(b"not an object at all")
    else:   # a file whose key is not this process's (copied from another machine)
        blob = blob.replace(b'"unit": "pool"', b'"unit": "poox"')   # same length
    open(path, "wb").write(bytes(blob))
    status, compiled = fresh_load()
    assert compiled and status == f"compiled ({'stale' if damage == 'key' else 'corrupt'})"
    assert fresh_load() == ("hit", False)


def test_cache_key_names_what_the_object_depends_on():
    key = build.key(ISA.current())
    assert {"unit", "cpu", "features", "llvmlite", "sources", "triple"} <= set(key)
    assert cache.path(key) != cache.path(build.key("pool"))
