"""The native thread pool, emitted as LLVM IR: workers that spin briefly, then park on a futex.

These functions go into the pool's object (see build.py), with pool_stop (ends the workers)
and pool_count (a counting item for the pool's tests):

    pool_worker(state, index)         a worker's whole life; returns when state[STOP] is set
    pool_run(state, fn, args, n, active)
                                      runs job (fn, args, n): items 0..n-1, fn(args, i) each,
                                      on the caller and the first `active` workers; returns
                                      when every item is done

`state` is an int64 array owned by bind.py (the word indices are below).  A job's items are
claimed from one 64-bit word, NEXT = (job generation << 32) | next item, by compare-and-swap:
a claim succeeds only while NEXT still names the claimer's job, and the caller closes NEXT
(CLOSED, a generation no job has) before it writes the next job's fields.  So a worker that
is still inside job k's claim loop when job k+1 is published can never take an item of k+1
with k's arguments, nor an item of k that does not exist: a successful claim means the item
is not done, so the caller is still waiting on job k and its fields are still k's.  No
"every worker has left" counter is needed, and the caller never waits on a parked worker.

Idle workers spin on the 32-bit generation word GEN (x86 `pause`) for state[SPIN]
iterations, then park: on Linux FUTEX_WAIT_PRIVATE on GEN (through libc's `syscall`, which
MCJIT resolves from the process), elsewhere sched_yield in a loop.  The caller bumps GEN,
then wakes the sleepers if any (SLEEPERS is raised before the wait, GEN is re-checked by the
futex itself: with sequentially consistent atomics no wake-up is lost).  Every atomic here
is seq_cst: a few per item, nothing next to the kernels' work.
"""

from __future__ import annotations

import platform
import sys

from llvmlite import ir

from ponder.kernels.llvm_ir import c64, emit_loop

# the words of the state array (int64 each; GEN is the low 32 bits of word 0, little endian)
GEN, NEXT, FN, ARGS, N, DONE, ACTIVE, STOP, SLEEPERS, SPIN, PARKS, WORDS = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16
GEN_MASK = 0x7FFFFFFF            # job generations; CLOSED's high half (0xFFFFFFFF) is never one
CLOSED = -1
# Spin iterations before parking.  One `pause` is ~40 ns on Skylake-and-later Intel cores, ~10 ns
# on Zen; 2000 keeps a worker hot across the gaps between a step's products (a few us each) and
# parks it within ~20-80 us of the last job (measured: see BENCHMARKS.md, native runtime).
DEFAULT_SPIN = 2000

_FUTEX_SYSCALL = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
_FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 128, 129

_i32, _i64 = ir.IntType(32), ir.IntType(64)
_i64p = _i64.as_pointer()
ITEM_TYPE = ir.FunctionType(ir.VoidType(), [_i64p, _i64])


def futex_syscall() -> int | None:
    """The futex system call's number on this OS and machine, or None (then: spin + sched_yield)."""
    if not sys.platform.startswith("linux"):
        return None
    return _FUTEX_SYSCALL.get(platform.machine().lower())


class _Emitter:
    def __init__(self, mod: ir.Module, futex: int | None, x86: bool):
        self.mod, self.futex = mod, futex
        self.pause = (mod.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
                      if x86 else None)
        if futex is not None:
            self.syscall = ir.Function(mod, ir.FunctionType(_i64, [_i64], var_arg=True), "syscall")
        self.sched_yield = ir.Function(mod, ir.FunctionType(_i32, []), "sched_yield")

    @staticmethod
    def word(b, st, k):
        return b.gep(st, [c64(k)])

    def gen_word(self, b, st):
        return b.bitcast(self.word(b, st, GEN), _i32.as_pointer())

    def load(self, b, st, k):
        return b.load_atomic(self.word(b, st, k), "seq_cst", 8)

    def store(self, b, st, k, v):
        b.store_atomic(v, self.word(b, st, k), "seq_cst", 8)

    def add(self, b, st, k, v):
        return b.atomic_rmw("add", self.word(b, st, k), v, "seq_cst")

    def relax(self, b):
        if self.pause is not None:
            b.call(self.pause, [])

    def claim_loop(self, b, st, gen):
        """while a claim on job `gen` succeeds: run the item, count it done."""
        f = b.function
        head, check, claim, run, out = (f.append_basic_block(f"claim.{n}") for n in ("head", "check", "cas", "run", "out"))
        b.branch(head)
        b.position_at_end(head)
        v = self.load(b, st, NEXT)
        same = b.icmp_unsigned("==", b.lshr(v, c64(32)), b.zext(gen, _i64))
        b.cbranch(same, check, out)
        b.position_at_end(check)
        idx = b.and_(v, c64(0xFFFFFFFF))
        n = self.load(b, st, N)
        b.cbranch(b.icmp_signed("<", idx, n), claim, out)
        b.position_at_end(claim)
        got = b.cmpxchg(self.word(b, st, NEXT), v, b.add(v, c64(1)), "seq_cst", "seq_cst")
        b.cbranch(b.extract_value(got, 1), run, head)
        b.position_at_end(run)
        fn = b.inttoptr(self.load(b, st, FN), ITEM_TYPE.as_pointer())
        args = b.inttoptr(self.load(b, st, ARGS), _i64p)
        b.call(fn, [args, idx])
        self.add(b, st, DONE, c64(1))
        b.branch(head)
        b.position_at_end(out)

    def park(self, b, st, seen):
        """Sleep until GEN may differ from seen (or a spurious wake-up: the caller loops)."""
        if self.futex is not None:
            b.call(self.syscall, [c64(self.futex), b.ptrtoint(self.gen_word(b, st), _i64), c64(_FUTEX_WAIT_PRIVATE),
                                  b.zext(seen, _i64), c64(0), c64(0), c64(0)])
        else:
            b.call(self.sched_yield, [])

    def wake_all(self, b, st):
        if self.futex is not None:
            b.call(self.syscall, [c64(self.futex), b.ptrtoint(self.gen_word(b, st), _i64), c64(_FUTEX_WAKE_PRIVATE),
                                  c64(0x7FFFFFFF), c64(0), c64(0), c64(0)])

    def worker(self):
        f = ir.Function(self.mod, ir.FunctionType(ir.VoidType(), [_i64p, _i64]), "pool_worker")
        st, index = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        seen0 = b.load_atomic(self.gen_word(b, st), "seq_cst", 4)
        entry = b.block
        top, look, job, join, idle, spin, sleep, woke, unsleep, end = (f.append_basic_block(n) for n in (
            "top", "look", "job", "join", "idle", "spin", "sleep", "woke", "unsleep", "end"))
        b.branch(top)
        b.position_at_end(top)
        seen = b.phi(_i32)
        spins = b.phi(_i64)
        seen.add_incoming(seen0, entry)
        spins.add_incoming(c64(0), entry)
        b.cbranch(b.icmp_signed("!=", self.load(b, st, STOP), c64(0)), end, look)

        b.position_at_end(look)
        gen = b.load_atomic(self.gen_word(b, st), "seq_cst", 4)
        b.cbranch(b.icmp_unsigned("!=", gen, seen), job, idle)

        b.position_at_end(job)          # a new job: take part if this worker is one of its `active`
        b.cbranch(b.icmp_signed("<", index, self.load(b, st, ACTIVE)), join, top)
        seen.add_incoming(gen, job)
        spins.add_incoming(c64(0), job)
        b.position_at_end(join)
        self.claim_loop(b, st, gen)
        seen.add_incoming(gen, b.block)
        spins.add_incoming(c64(0), b.block)
        b.branch(top)

        b.position_at_end(idle)
        b.cbranch(b.icmp_signed("<", spins, self.load(b, st, SPIN)), spin, sleep)
        b.position_at_end(spin)
        self.relax(b)
        seen.add_incoming(seen, spin)
        spins.add_incoming(b.add(spins, c64(1)), spin)
        b.branch(top)

        b.position_at_end(sleep)        # announce, re-check, wait, withdraw; a parked worker stays
        self.add(b, st, SLEEPERS, c64(1))  # parked after a spurious wake-up (spins is not reset)
        again = b.load_atomic(self.gen_word(b, st), "seq_cst", 4)
        quiet = b.and_(b.icmp_unsigned("==", again, seen), b.icmp_signed("==", self.load(b, st, STOP), c64(0)))
        b.cbranch(quiet, woke, unsleep)
        b.position_at_end(woke)
        self.add(b, st, PARKS, c64(1))
        self.park(b, st, seen)
        b.branch(unsleep)
        b.position_at_end(unsleep)
        self.add(b, st, SLEEPERS, c64(-1))
        b.branch(top)
        seen.add_incoming(seen, unsleep)
        spins.add_incoming(spins, unsleep)

        b.position_at_end(end)
        b.ret_void()
        return f

    def run(self):
        f = ir.Function(self.mod, ir.FunctionType(ir.VoidType(), [_i64p, _i64, _i64, _i64, _i64]), "pool_run")
        st, fn, args, n, active = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        inline, publish, wake, work, wait, done = (
            f.append_basic_block(x) for x in ("inline", "publish", "wake", "work", "wait", "done"))
        b.cbranch(b.icmp_signed("<=", active, c64(0)), inline, publish)

        b.position_at_end(inline)       # no worker: run the items here, touching no shared word

        def item(i):
            b.call(b.inttoptr(fn, ITEM_TYPE.as_pointer()), [b.inttoptr(args, _i64p), i])
        emit_loop(b, c64(0), n, "inline", item)
        b.branch(done)

        b.position_at_end(publish)
        self.store(b, st, NEXT, c64(CLOSED))
        for k, v in ((FN, fn), (ARGS, args), (N, n), (DONE, c64(0)), (ACTIVE, active)):
            self.store(b, st, k, v)
        old = b.load_atomic(self.gen_word(b, st), "seq_cst", 4)
        gen = b.and_(b.add(old, ir.Constant(_i32, 1)), ir.Constant(_i32, GEN_MASK))
        self.store(b, st, NEXT, b.shl(b.zext(gen, _i64), c64(32)))
        b.store_atomic(gen, self.gen_word(b, st), "seq_cst", 4)
        b.cbranch(b.icmp_signed(">", self.load(b, st, SLEEPERS), c64(0)), wake, work)
        b.position_at_end(wake)
        self.wake_all(b, st)
        b.branch(work)
        b.position_at_end(work)
        self.claim_loop(b, st, gen)
        b.branch(wait)
        work_end = b.block
        b.position_at_end(wait)         # the workers' last items: spin, then yield the core (a worker
        waited = b.phi(_i64)            # that was preempted mid-item may be waiting for it)
        waited.add_incoming(c64(0), work_end)
        more = b.icmp_signed("<", self.load(b, st, DONE), n)
        spin, give = f.append_basic_block("wait.spin"), f.append_basic_block("wait.yield")
        b.cbranch(more, spin, done)
        b.position_at_end(spin)
        self.relax(b)
        waited1 = b.add(waited, c64(1))
        b.cbranch(b.icmp_signed("<", waited, self.load(b, st, SPIN)), wait, give)
        waited.add_incoming(waited1, spin)
        b.position_at_end(give)
        b.call(self.sched_yield, [])
        waited.add_incoming(waited, give)
        b.branch(wait)
        b.position_at_end(done)
        b.ret_void()
        return f

    def stop(self):
        """pool_stop(state): set STOP, bump GEN and wake every sleeper (the workers then return)."""
        f = ir.Function(self.mod, ir.FunctionType(ir.VoidType(), [_i64p]), "pool_stop")
        st, = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        self.store(b, st, STOP, c64(1))
        b.atomic_rmw("add", self.gen_word(b, st), ir.Constant(_i32, 1), "seq_cst")
        self.wake_all(b, st)
        b.ret_void()
        return f


def _count_item(mod: ir.Module) -> None:
    """pool_count(args, i): atomically args[0][i] += 1, args[1] += 1: the item of the pool's own
    tests (every item runs exactly once, with its own job's arguments) and of its dispatch timing."""
    f = ir.Function(mod, ITEM_TYPE, "pool_count")
    args, i = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    counts = b.inttoptr(b.load(args), _i64p)
    b.atomic_rmw("add", b.gep(counts, [i]), c64(1), "seq_cst")
    b.atomic_rmw("add", b.gep(args, [c64(1)]), c64(1), "seq_cst")
    b.ret_void()


def emit(mod: ir.Module, triple: str) -> None:
    """Add pool_worker, pool_run, pool_stop and pool_count to mod."""
    e = _Emitter(mod, futex_syscall(), triple.startswith(("x86_64", "i686", "i386")))
    e.worker()
    e.run()
    e.stop()
    _count_item(mod)
