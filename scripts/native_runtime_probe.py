"""Probe: ponder's product kernels without Numba at run time (evidence for issue 14's warm start).

    python scripts/native_runtime_probe.py [--model smollm2-135m] [--repeats 15]

Numba costs about 0.5 s of every process start (its import, then its typing and target
registries on the first call of a cached kernel), which is most of ponder's gap to
llama-cpp-python's start.  This probe measures the alternative: the integer-path kernels
come from ponder's own IR emitter (kernels/qmm_emit.py), are compiled by llvmlite alone into
one object file (which a real runtime would cache under $PONDER_HOME and load with
`add_object_file`), and run on a small native thread pool called through ctypes.

It reports:
- the start-up cost of that path: `import llvmlite.binding`, making the JIT, loading the object;
- the compile time of the kernels (one module, every format the model uses);
- per product, bit-identity with today's Numba kernels (the exactness contract), and the time of
  all of the model's weight products at M = 1, 4, 8 rows, native against Numba;
- the cost of an empty parallel dispatch, native pool against Numba's prange.

The pool here is the smallest correct one, written in IR: workers spin on a generation counter
(x86 `pause`), grab items with an atomic counter, and the caller waits until every worker has
left the job before the next one is published (a worker still in the last job's loop must
never take an item of the next job with the last job's arguments).  It never sleeps, so it is
for this measurement only: a real runtime must park idle workers (futex) and own every kernel
of the hot path (activation quantization, attention, norms, sampling), because a spinning
worker and Numba's own threads on the same cores slow each other down.
"""

from __future__ import annotations

import argparse
import ctypes
import threading
import time

import numpy as np

I64_FIELDS = 14  # the item function's argument vector, see _item_function
CHUNKS = 2  # one per thread (the caller and one worker)


def _ir():
    from llvmlite import ir
    return ir


def _item_function(mod, be, fmt, bits):
    """void qmm_<fmt>_<bits>(i64* args, i64 c): chunk c of the row groups, all tokens (the emitter's code).

    args: w, xh, xl, dx, aux, y, nb, M, xs, ss, ys, bytes per row group, groups G, chunks C.  Chunk c
    is the contiguous groups [c*G/C, (c+1)*G/C): each thread streams one part of the matrix, as
    Numba's prange schedules it (one group per item, interleaved between threads, measured slower)."""
    ir = _ir()
    from ponder.kernels.llvm_ir import c64
    from ponder.kernels.qmm_emit import _emit_group

    i64 = ir.IntType(64)
    f = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i64.as_pointer(), i64]), f"qmm_{fmt}_{bits}")
    a, c = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    v = [b.load(b.gep(a, [c64(k)])) for k in range(I64_FIELDS)]
    g0 = b.sdiv(b.mul(c, v[12]), v[13])
    g1 = b.sdiv(b.mul(b.add(c, c64(1)), v[12]), v[13])
    entry = b.block
    head, body, out = (f.append_basic_block(n) for n in ("groups", "group", "out"))
    b.branch(head)
    b.position_at_end(head)
    g = b.phi(i64)
    g.add_incoming(g0, entry)
    b.cbranch(b.icmp_signed("<", g, g1), body, out)
    b.position_at_end(body)
    w = b.add(v[0], b.mul(g, v[11]))
    y = b.add(v[5], b.mul(g, c64(be.LANES * 4)))
    _emit_group(b, be, fmt, bits, w, v[1], v[2], v[3], v[4], y, v[6], v[7], v[8], v[9], v[10])
    g.add_incoming(b.add(g, c64(1)), b.block)
    b.branch(head)
    b.position_at_end(out)
    b.ret_void()


# pool state, int64 words
GEN, FN, ARGS, N, NEXT, DONE, STOP, LEFT, WORKERS = range(9)


def _pool_functions(mod):
    """pool_worker(state) (runs until state[STOP]) and pool_run(state, fn, args, n)."""
    ir = _ir()
    from ponder.kernels.llvm_ir import c64

    i64 = ir.IntType(64)
    i64p = i64.as_pointer()
    item_ty = ir.FunctionType(ir.VoidType(), [i64p, i64])
    pause = mod.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))

    def word(b, st, k):
        return b.gep(st, [c64(k)])

    def grab(b, st, fn_int, args):
        # while (i = next++) < n: fn(args, i); done++
        f = b.function
        head, body, out = (f.append_basic_block(n) for n in ("grab.head", "grab.body", "grab.out"))
        b.branch(head)
        b.position_at_end(head)
        n = b.load_atomic(word(b, st, N), "acquire", 8)
        i = b.atomic_rmw("add", word(b, st, NEXT), c64(1), "acq_rel")
        b.cbranch(b.icmp_signed("<", i, n), body, out)
        b.position_at_end(body)
        b.call(b.inttoptr(fn_int, item_ty.as_pointer()), [b.inttoptr(args, i64p), i])
        b.atomic_rmw("add", word(b, st, DONE), c64(1), "acq_rel")
        b.branch(head)
        b.position_at_end(out)

    wf = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i64p]), "pool_worker")
    st, = wf.args
    b = ir.IRBuilder(wf.append_basic_block("entry"))
    seen0 = b.load_atomic(word(b, st, GEN), "acquire", 8)
    entry = b.block
    spin, check, wait, work, end = (wf.append_basic_block(n) for n in ("spin", "check", "wait", "work", "end"))
    b.branch(spin)
    b.position_at_end(spin)
    seen = b.phi(i64)
    seen.add_incoming(seen0, entry)
    stop = b.load_atomic(word(b, st, STOP), "acquire", 8)
    b.cbranch(b.icmp_signed("!=", stop, c64(0)), end, check)
    b.position_at_end(check)
    gen = b.load_atomic(word(b, st, GEN), "acquire", 8)
    b.cbranch(b.icmp_signed("!=", gen, seen), work, wait)
    b.position_at_end(wait)
    b.call(pause, [])
    seen.add_incoming(seen, wait)
    b.branch(spin)
    b.position_at_end(work)
    grab(b, st, b.load_atomic(word(b, st, FN), "acquire", 8), b.load_atomic(word(b, st, ARGS), "acquire", 8))
    b.atomic_rmw("add", word(b, st, LEFT), c64(1), "acq_rel")
    seen.add_incoming(gen, b.block)
    b.branch(spin)
    b.position_at_end(end)
    b.ret_void()

    rf = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i64p, i64, i64, i64]), "pool_run")
    st, fn_int, args, n = rf.args
    b = ir.IRBuilder(rf.append_basic_block("entry"))
    for k, val in ((FN, fn_int), (ARGS, args), (N, n), (DONE, c64(0)), (NEXT, c64(0)), (LEFT, c64(0))):
        b.store_atomic(val, word(b, st, k), "release", 8)
    b.atomic_rmw("add", word(b, st, GEN), c64(1), "acq_rel")
    grab(b, st, fn_int, args)
    wait_done, wait_left, out = (rf.append_basic_block(n) for n in ("wait.done", "wait.left", "out"))
    b.branch(wait_done)
    b.position_at_end(wait_done)
    d = b.load_atomic(word(b, st, DONE), "acquire", 8)
    b.call(pause, [])
    b.cbranch(b.icmp_signed("<", d, n), wait_done, wait_left)
    b.position_at_end(wait_left)
    left = b.load_atomic(word(b, st, LEFT), "acquire", 8)
    workers = b.load_atomic(word(b, st, WORKERS), "acquire", 8)
    b.call(pause, [])
    b.cbranch(b.icmp_signed("<", left, workers), wait_left, out)
    b.position_at_end(out)
    b.ret_void()


def compile_object(fmts) -> tuple[bytes, float]:
    """Every kernel in one module, compiled for this CPU: (object code, seconds)."""
    import llvmlite.binding as llvm

    from ponder.kernels import isa as isa_mod

    ir = _ir()
    t0 = time.perf_counter()
    be = isa_mod.backend(isa_mod.current())
    mod = ir.Module("ponder_native")
    mod.triple = llvm.get_process_triple()
    for fmt in fmts:
        _item_function(mod, be, fmt, 16)
    _pool_functions(mod)
    tm = _target_machine()
    m = llvm.parse_assembly(str(mod))
    m.verify()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(m, pb)
    return tm.emit_object(m), time.perf_counter() - t0


def _target_machine():
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)


def load_object(obj: bytes):
    """(JIT engine, seconds): what a warm start would pay instead of Numba's import and registries."""
    t0 = time.perf_counter()
    import llvmlite.binding as llvm

    ee = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine())
    ee.add_object_file(llvm.ObjectFileRef.from_data(obj))
    ee.finalize_object()
    return ee, time.perf_counter() - t0


def _median_of_best(f, repeats: int) -> float:
    best = []
    for _ in range(3):
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        best.append(float(np.median(ts)))
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import llvmlite.binding  # noqa: F401
    import_s = time.perf_counter() - t0

    from ponder.engine.model_runner import ModelRunner
    from ponder.kernels import isa as isa_mod, qmatmul
    from ponder.kernels.qmm_layout import FMT_Q4_1
    from ponder.loading.model_files import load_model

    fm = ModelRunner(load_model(args.model).weights, 16, 2).model
    mats = [p.packed for layer in fm.layers for g in (layer.qkv, layer.wo, layer.gate_up, layer.w_down)
            for p in getattr(g, "parts", [g])] + [fm.output.packed]
    fmts = sorted({m.fmt for m in mats})
    obj, compile_s = compile_object(fmts)
    ee, load_s = load_object(obj)
    print(f"instruction set {isa_mod.current()}; {len(mats)} weight matrices, {sum(m.nbytes for m in mats) / 1e6:.1f} MB")
    print(f"start-up: import llvmlite.binding {import_s * 1e3:.0f} ms, JIT + load object {load_s * 1e3:.0f} ms; "
          f"compile {len(fmts)} kernels + pool {compile_s:.2f} s ({len(obj)} bytes)")

    state = np.zeros(16, np.int64)
    state[WORKERS] = 1
    sp = state.ctypes.data
    worker = ctypes.CFUNCTYPE(None, ctypes.c_int64)(ee.get_function_address("pool_worker"))
    run = ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * 4)(ee.get_function_address("pool_run"))
    item = {f: ee.get_function_address(f"qmm_{f}_16") for f in fmts}
    thread = threading.Thread(target=worker, args=(sp,), daemon=True)  # ctypes releases the GIL
    thread.start()

    rng = np.random.default_rng(0)
    rows = []
    for M in (1, 4, 8):
        acts = [qmatmul.quantize(rng.standard_normal((M, m.cols)).astype(np.float32), bits=16) for m in mats]
        outs = [np.empty((M, m.buf.shape[0] * m.lanes), np.float32) for m in mats]
        jobs = []
        for m, a, y in zip(mats, acts, outs):
            G, nb, rec = m.buf.shape
            aux = a.dxs if m.fmt == FMT_Q4_1 else a.sx
            vec = np.array([m.buf.ctypes.data, a.qx.ctypes.data, a.ql.ctypes.data, a.dx.ctypes.data, aux.ctypes.data,
                            y.ctypes.data, nb, M, a.qx.strides[0], a.dx.strides[0], y.strides[0], nb * rec,
                            G, CHUNKS], np.int64)
            jobs.append((item[m.fmt], vec, vec.ctypes.data, CHUNKS))

        def native():
            for fn, _, vp, G in jobs:
                run(sp, fn, vp, G)
        native()
        rows.append((M, mats, acts, outs, _median_of_best(native, args.repeats)))
    t = time.perf_counter()
    for _ in range(2000):
        run(sp, jobs[0][0], jobs[0][2], 0)
    native_empty = (time.perf_counter() - t) / 2000
    state[STOP] = 1  # the spinning worker ends before Numba's threads are measured
    thread.join()

    from numba import njit, prange

    @njit(parallel=True)
    def empty(a):
        for i in prange(a.shape[0]):
            a[i] += 1
    z = np.zeros(2)
    empty(z)
    t = time.perf_counter()
    for _ in range(2000):
        empty(z)
    numba_empty = (time.perf_counter() - t) / 2000
    for M, mats, acts, outs, native_s in rows:
        same = all(np.array_equal(o[:, :m.rows], qmatmul.matmul(m, a)) for m, a, o in zip(mats, acts, outs))

        def numba_all():
            for m, a in zip(mats, acts):
                qmatmul.matmul(m, a)
        numba_s = _median_of_best(numba_all, args.repeats)
        print(f"M={M}: bit-identical to Numba: {same}; all products native {native_s * 1e3:.2f} ms, "
              f"Numba {numba_s * 1e3:.2f} ms ({numba_s / native_s:.2f}x)")
    print(f"empty parallel dispatch: native pool through ctypes {native_empty * 1e6:.1f} us, "
          f"Numba prange {numba_empty * 1e6:.1f} us")


if __name__ == "__main__":
    main()
