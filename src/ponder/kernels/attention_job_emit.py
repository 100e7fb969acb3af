"""Paged attention as a job of the native runtime's pool, in LLVM IR: the Numba driver's loop body as an item.

For a back end, a head dim d and a block size bs (attention_emit.supports), a unit's object holds

    attention_job_<isa>_d<d>_bs<bs>(i64* args, i64 i)       one item: job i of the plan
    attention_<isa>_d<d>_bs<bs>(i64* pool_state, i64* args, i64 threads)   the entry

Item i does exactly what one iteration of `while j < n_jobs` in attention._paged_attention_template
does for its job (group g, KV head, first query head qh0, H query heads): copy the job's rows' q
into its scratch, set each row's state (acc 0, l 0, m -inf), fold the group's shared blocks
block-major into all the rows, then each token's own blocks into its H rows, then per row the
fixed tree over l's bs lanes and out = acc * (1 / L).  The fold is attention_emit.emit_fold, the
tree and the scaling are the driver's operations in its order: the same bits as the Numba driver.

Scratch: a job's rows live in a slot of one caller-allocated float32 buffer (attention_native's
Plan): state rows at the slot's start (64-byte aligned, as the fold's aligned accesses assume),
then the q rows.  The pool has no worker index, so an item claims a free slot with a
compare-and-swap on the slot's flag and frees it at the end: at most `threads` items run at once,
so with that many slots one is always free, and the scratch stays a few KB per thread (in L1/L2)
whatever the number of jobs.  Which slot a job gets changes no bit: every word it reads was
written by the job itself.

Job order: the plan lists the jobs costliest first; the pool hands out items in index order,
so threads take the big jobs first and stay balanced (the order changes no bit: rows never mix).
"""

from __future__ import annotations

from llvmlite import ir

from ponder.kernels.attention_emit import emit_fold, state_floats
from ponder.kernels.llvm_ir import c64, emit_loop, ptr

# The argument vector (int64 words; addresses, strides in bytes).  The first ones are the plan's
# (fixed for a forward step), then the call's arrays (attention_native.run).
ARGS = ("jobs", "group_start", "group_tokens", "group_shared", "H", "n_jobs", "scratch", "slot_bytes",
        "qs_offset", "flags", "n_slots",
        "token_row", "context_len", "tables", "table_stride", "q", "q_stride", "out", "out_stride",
        "k", "k_block", "k_head", "v", "v_block", "v_head", "scale")
ARG = {name: i for i, name in enumerate(ARGS)}
JOB_WORDS = 4          # a job's words in `jobs`: group, KV head, first query head, (unused)
FLAG_WORDS = 8         # a slot's flag, one per 64-byte line (no false sharing between threads)

_i32, _i64, _f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
_i64p = _i64.as_pointer()
_VoidT = ir.VoidType()


def item_name(isa: str, d: int, bs: int) -> str:
    return f"attention_job_{isa}_d{d}_bs{bs}"


def entry_name(isa: str, d: int, bs: int) -> str:
    return f"attention_{isa}_d{d}_bs{bs}"


def unit_name(isa: str, d: int, bs: int) -> str:
    """The native unit holding one shape's attention (native/build.py parses it back)."""
    return entry_name(isa, d, bs)


def parse_unit(unit: str) -> tuple[str, int, int] | None:
    """(isa, d, bs) of an attention unit's name, or None if `unit` is not one."""
    if not unit.startswith("attention_"):
        return None
    isa, _, shape = unit[len("attention_"):].rpartition("_d")
    d, _, bs = shape.partition("_bs")
    if not (isa and d.isdigit() and bs.isdigit()):
        return None
    return isa, int(d), int(bs)


def _vf(n):
    return ir.VectorType(_f32, n)


def _emit_fold_fn(module, be, d, bs, name):
    """fold(qs, st, R, kt, v, cnt, scale) as a function of its own: the driver calls it at two sites."""
    f = ir.Function(module, ir.FunctionType(_VoidT, [_i64] * 6 + [_f32]), name)
    f.linkage = "internal"
    b = ir.IRBuilder(f.append_basic_block("entry"))
    emit_fold(b, be, d, bs, *f.args)
    b.ret_void()
    return f


def _emit_item(module, be, d, bs):
    fold = _emit_fold_fn(module, be, d, bs, f"attention_fold_{be.NAME}_d{d}_bs{bs}")
    f = ir.Function(module, ir.FunctionType(_VoidT, [_i64p, _i64]), item_name(be.NAME, d, bs))
    argv, i = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))
    w = {n: b.load(b.gep(argv, [c64(ARG[n])])) for n in ARGS if n != "scale"}
    # the scale comes as a double's bits (native/pycall.py): rounded to the float32 the fold takes
    scale = b.fptrunc(b.bitcast(b.load(b.gep(argv, [c64(ARG["scale"])])), ir.DoubleType()), _f32)
    sf = state_floats(d, bs)
    qrow, srow = 4 * d, 4 * sf

    def word(base, idx, ty=_i64):   # base[idx] of an i64 or i32 array, as i64
        v = b.load(ptr(b, b.add(base, b.mul(idx, c64(ty.width // 8))), ty))
        return v if ty is _i64 else b.sext(v, _i64)

    job = b.add(w["jobs"], b.mul(i, c64(8 * JOB_WORDS)))
    g, kvh, qh0 = (b.load(ptr(b, b.add(job, c64(8 * k)), _i64)) for k in range(3))
    H = w["H"]

    # a free slot: flags[s] 0 -> 1 (acquire), trying the slots in turn
    fn = b.function
    pre = b.block
    look, have = fn.append_basic_block("slot.look"), fn.append_basic_block("slot.have")
    b.branch(look)
    b.position_at_end(look)
    s = b.phi(_i64)
    s.add_incoming(c64(0), pre)
    flag = ptr(b, b.add(w["flags"], b.mul(s, c64(8 * FLAG_WORDS))), _i64)
    got = b.extract_value(b.cmpxchg(flag, c64(0), c64(1), "acquire", "monotonic"), 1)
    s1 = b.add(s, c64(1))
    s.add_incoming(b.select(b.icmp_signed("<", s1, w["n_slots"]), s1, c64(0)), look)
    b.cbranch(got, have, look)
    b.position_at_end(have)
    st = b.add(w["scratch"], b.mul(s, w["slot_bytes"]))
    qs = b.add(st, w["qs_offset"])

    g0 = word(w["group_start"], g)
    nt = b.sub(word(w["group_start"], b.add(g, c64(1))), g0)
    kv_k = b.add(w["k"], b.mul(kvh, w["k_head"]))
    kv_v = b.add(w["v"], b.mul(kvh, w["v_head"]))
    zeros, ninf = ir.Constant(_vf(8), None), ir.Constant(_vf(bs), [float("-inf")] * bs)

    def token(a):
        return word(w["group_tokens"], b.add(g0, a))

    def q_row(t, hh):   # address of q[t, qh0 + hh, :]
        return b.add(b.add(w["q"], b.mul(t, w["q_stride"])), b.mul(b.add(qh0, hh), c64(qrow)))

    def setup_token(a):
        t = token(a)

        def setup_row(hh):
            r = b.add(b.mul(a, H), hh)
            src, dst, row = q_row(t, hh), b.add(qs, b.mul(r, c64(qrow))), b.add(st, b.mul(r, c64(srow)))
            for c in range(0, d, 8):
                b.store(b.load(ptr(b, b.add(src, c64(4 * c)), _vf(8)), align=4), ptr(b, b.add(dst, c64(4 * c)), _vf(8)),
                        align=4)
            for c in range(0, d, 8):   # acc = 0
                b.store(zeros, ptr(b, b.add(row, c64(4 * c)), _vf(8)), align=4)
            b.store(ir.Constant(_vf(bs), None), ptr(b, b.add(row, c64(4 * d)), _vf(bs)), align=4)         # l = 0
            b.store(ninf, ptr(b, b.add(row, c64(4 * (d + bs))), _vf(bs)), align=4)                        # m = -inf
        emit_loop(b, c64(0), H, "att.setup_row", setup_row)
    emit_loop(b, c64(0), nt, "att.setup", setup_token)

    def table_of(t):
        return b.add(w["tables"], b.mul(word(w["token_row"], t, _i32), w["table_stride"]))

    def block_addrs(table, blk_index):
        blk = word(table, blk_index, _i32)
        return b.add(kv_k, b.mul(blk, w["k_block"])), b.add(kv_v, b.mul(blk, w["v_block"]))

    shared = word(w["group_shared"], g)
    first_table = table_of(token(c64(0)))

    def shared_block(blk_index):   # the group's shared blocks: block-major, each loaded once for all rows
        kt, v = block_addrs(first_table, blk_index)
        b.call(fold, [qs, st, b.mul(nt, H), kt, v, c64(bs), scale])
    emit_loop(b, c64(0), shared, "att.shared", shared_block)

    def own(a):   # each token's own blocks, in position order, then its rows' results
        t = token(a)
        table = table_of(t)
        ctx = word(w["context_len"], t, _i32)
        nb = b.sdiv(b.add(ctx, c64(bs - 1)), c64(bs))
        q0 = b.add(qs, b.mul(b.mul(a, H), c64(qrow)))
        s0 = b.add(st, b.mul(b.mul(a, H), c64(srow)))

        def block(blk_index):
            kt, v = block_addrs(table, blk_index)
            left = b.sub(ctx, b.mul(blk_index, c64(bs)))
            cnt = b.select(b.icmp_signed("<", left, c64(bs)), left, c64(bs))
            b.call(fold, [q0, s0, H, kt, v, cnt, scale])
        emit_loop(b, shared, nb, "att.own", block)

        def finish(hh):
            row = b.add(s0, b.mul(hh, c64(srow)))
            lv = b.load(ptr(b, b.add(row, c64(4 * d)), _vf(bs)), align=4)
            lanes = [b.extract_element(lv, ir.Constant(_i32, j)) for j in range(bs)]
            width = bs
            while width > 1:   # the driver's fixed tree: lane i += lane i + width/2
                width //= 2
                lanes = [b.fadd(lanes[j], lanes[j + width]) for j in range(width)]
            inv = b.fdiv(ir.Constant(_f32, 1.0), lanes[0])
            iv = b.shuffle_vector(b.insert_element(ir.Constant(_vf(8), ir.Undefined), inv, ir.Constant(_i32, 0)),
                                  ir.Constant(_vf(8), ir.Undefined), ir.Constant(ir.VectorType(_i32, 8), [0] * 8))
            dst = b.add(b.add(w["out"], b.mul(t, w["out_stride"])), b.mul(b.add(qh0, hh), c64(qrow)))
            for c in range(0, d, 8):
                acc = b.load(ptr(b, b.add(row, c64(4 * c)), _vf(8)), align=4)
                b.store(b.fmul(acc, iv), ptr(b, b.add(dst, c64(4 * c)), _vf(8)), align=4)
        emit_loop(b, c64(0), H, "att.finish", finish)
    emit_loop(b, c64(0), nt, "att.tokens", own)

    b.store_atomic(c64(0), flag, "release", 8)
    b.ret_void()
    return f


def _emit_entry(module, be, d, bs, item):
    """entry(pool_state, args, threads): the plan's n_jobs items on min(threads, n_jobs, n_slots) threads."""
    run = module.globals.get("pool_run") or ir.Function(
        module, ir.FunctionType(_VoidT, [_i64p, _i64, _i64, _i64, _i64]), "pool_run")
    f = ir.Function(module, ir.FunctionType(_VoidT, [_i64p, _i64p, _i64]), entry_name(be.NAME, d, bs))
    st, argv, threads = f.args
    b = ir.IRBuilder(f.append_basic_block("entry"))

    def smin(x, y):
        return b.select(b.icmp_signed("<", x, y), x, y)

    n = b.load(b.gep(argv, [c64(ARG["n_jobs"])]))
    C = smin(smin(threads, n), b.load(b.gep(argv, [c64(ARG["n_slots"])])))
    C = b.select(b.icmp_signed("<", C, c64(1)), c64(1), C)
    b.call(run, [st, b.ptrtoint(item, _i64), b.ptrtoint(argv, _i64), n, b.sub(C, c64(1))])
    b.ret_void()
    return f


def emit(module, be, d: int, bs: int) -> None:
    """Add one shape's attention item and entry (and its fold) to module."""
    _emit_entry(module, be, d, bs, _emit_item(module, be, d, bs))
