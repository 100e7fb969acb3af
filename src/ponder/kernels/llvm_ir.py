"""Pieces shared by the kernels that emit LLVM IR (qmatmul, attention, the native runtime).

The kernels process rows in tiles that share one pass over their data; every row
runs the same operations in any tile, so the tiling never changes a bit.
"""

from __future__ import annotations

from llvmlite import ir

I64 = ir.IntType(64)


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def ptr(builder: ir.IRBuilder, addr, ty):
    """An integer address as a pointer to ty."""
    return builder.inttoptr(addr, ty.as_pointer())


def emit_loop(builder: ir.IRBuilder, start, stop, name: str, body, carried=()) -> list:
    """Emit `for i in range(start, stop): carried = body(i, *carried)` (i64 bounds, step 1).

    body(i, *values) emits one iteration at the builder's position (it may branch and add
    blocks) and returns the next values of the loop-carried ones (phis of their initial values'
    types), or None when there are none.  Returns their values after the loop, where the
    builder is left.
    """
    fn = builder.function
    pre = builder.block
    head, loop_body, out = (fn.append_basic_block(f"{name}{part}") for part in ("", ".body", ".out"))
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(I64)
    i.add_incoming(start, pre)
    phis = []
    for v in carried:
        phi = builder.phi(v.type)
        phi.add_incoming(v, pre)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, stop), loop_body, out)
    builder.position_at_end(loop_body)
    nxt = body(i, *phis) or []
    end = builder.block
    i.add_incoming(builder.add(i, c64(1)), end)
    for phi, v in zip(phis, nxt):
        phi.add_incoming(v, end)
    builder.branch(head)
    builder.position_at_end(out)
    return phis


def emit_tiled_loop(builder: ir.IRBuilder, total, tmax: int, tails: tuple[int, ...], tile, name: str) -> None:
    """Emit: t = 0; while total - t >= tmax: tile(tmax, t); t += tmax; then for each T in tails
    (descending): if total - t >= T: tile(T, t); t += T.

    tile(T, t) emits the code of one tile of T rows starting at row t (an i64 value).
    """
    fn = builder.function

    def remaining_at_least(t, n):
        return builder.icmp_signed(">=", builder.sub(total, t), c64(n))

    pre = builder.block
    head = fn.append_basic_block(f"{name}.tiles")
    body = fn.append_basic_block(f"{name}.tile")
    tail = fn.append_basic_block(f"{name}.tail")
    builder.branch(head)
    builder.position_at_end(head)
    t = builder.phi(I64)
    t.add_incoming(c64(0), pre)
    builder.cbranch(remaining_at_least(t, tmax), body, tail)
    builder.position_at_end(body)
    tile(tmax, t)
    t.add_incoming(builder.add(t, c64(tmax)), builder.block)
    builder.branch(head)
    builder.position_at_end(tail)
    cur = t
    for T in tails:
        do = fn.append_basic_block(f"{name}.rest")
        nxt = fn.append_basic_block(f"{name}.next")
        skip_from = builder.block
        builder.cbranch(remaining_at_least(cur, T), do, nxt)
        builder.position_at_end(do)
        tile(T, cur)
        after = builder.add(cur, c64(T))
        do_end = builder.block
        builder.branch(nxt)
        builder.position_at_end(nxt)
        phi = builder.phi(I64)
        phi.add_incoming(after, do_end)
        phi.add_incoming(cur, skip_from)
        cur = phi
