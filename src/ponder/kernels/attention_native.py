"""Paged attention on the native runtime's pool: a forward step's plan, and the call of one layer.

    supports(d, bs, isa=None)                   whether this shape runs natively (else: attention.py's Numba)
    plan(groups, context_len, block_size, kv_heads, q_heads) -> Plan   groups: attention_groups' triple
    run(plan, q, k_pool_layer, v_pool_layer, block_tables, token_row, context_len, scale, out)

Same inputs and the same bits as attention.paged_attention (its docstring has the contract); the
kernel is attention_job_emit's (one native unit per instruction set, head dim and block size,
compiled on first use).  No Numba is imported here.

A plan is made once per forward step (the groups are the same in every layer): the jobs
(group, KV head, query heads), costliest first by exactly the Numba driver's cost and
SPLIT_BELOW rule (a stable sort: the same set of jobs, the order changes no bit), the rows of
the biggest job, the scratch slots (one per thread: attention_job_emit) and the fixed words of
the argument vector.  run() then costs a few microseconds of Python per layer: it checks the
arrays' layout, and the tables' bounds once per step (by identity: the same tables object in
every layer), and makes one call through the runtime's builtin.
"""

from __future__ import annotations

import numpy as np

from ponder.kernels import attention_emit, attention_job_emit, native
from ponder.kernels import isa as isa_mod
from ponder.kernels.attention_groups import SPLIT_BELOW

_F32, _I32, _I64 = np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64)
_FLOATS = (float, np.float32, np.float64)
_ALIGN = 16   # floats: 64 bytes
_entries: dict = {}   # (isa, d, bs) -> the entry's address


def _backend(isa: str | None):
    return isa_mod.backend(isa or isa_mod.current())


def supports(d: int, bs: int, isa: str | None = None) -> bool:
    """Whether attention for head dim d and KV block size bs runs natively on the instruction set
    (default: this process's): the shapes attention_emit generates a fold for, on a SIMD back end."""
    be = _backend(isa)
    return be is not None and attention_emit.supports(be, d, bs)


def _entry(isa: str, d: int, bs: int) -> int:
    key = (isa, d, bs)
    a = _entries.get(key)
    if a is None:
        a = _entries[key] = native.runtime().address(attention_job_emit.entry_name(isa, d, bs),
                                                     attention_job_emit.unit_name(isa, d, bs))
    return a


def _up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class Plan:
    """The jobs of one forward step and what a layer's call needs besides its arrays (see plan())."""
    __slots__ = ("isa", "bs", "kv_heads", "q_heads", "n_jobs", "H", "max_rows", "n_slots", "jobs", "groups",
                 "context_len", "n_tokens", "ctx_max", "d", "entry", "scratch", "flags", "words", "checked",
                 "q_shape", "k_shape", "v_shape", "k_inner", "v_inner")

    def bind(self, d: int) -> None:
        """The head dim's entry, scratch and fixed words (on the first layer's call)."""
        if not supports(d, self.bs, self.isa):
            raise ValueError(f"no native attention for head dim {d} and block size {self.bs} on {self.isa}")
        sf = attention_emit.state_floats(d, self.bs)
        st_floats, q_floats = _up(self.max_rows * sf), _up(self.max_rows * d)
        per = st_floats + q_floats
        self.scratch = np.empty(self.n_slots * per + _ALIGN, np.float32)
        addr = self.scratch.ctypes.data
        base = addr + (-addr) % 64
        self.flags = np.zeros(self.n_slots * attention_job_emit.FLAG_WORDS, np.int64)
        self.entry = _entry(self.isa, d, self.bs)
        gs, gt, gsh = self.groups
        self.words = (self.jobs, gs, gt, gsh, self.H, self.n_jobs, base, 4 * per, 4 * st_floats, self.flags,
                      self.n_slots)
        self.q_shape = (self.q_heads, d)
        self.k_shape, self.v_shape = (self.kv_heads, d, self.bs), (self.kv_heads, self.bs, d)
        self.k_inner, self.v_inner = (4 * self.bs, 4), (4 * d, 4)
        self.d = d


def plan(groups, context_len, block_size: int, kv_heads: int, q_heads: int, isa: str | None = None) -> Plan:
    """The jobs of a forward step: groups = (group_start, group_tokens, group_shared) as
    attention_groups.prefix_groups / singleton_groups give them, context_len[t] the positions token t
    attends to.  isa: the back end (default: this process's)."""
    group_start, group_tokens, group_shared = groups
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError("block size must be a power of two")
    if kv_heads <= 0 or q_heads % kv_heads:
        raise ValueError(f"{q_heads} query heads cannot share {kv_heads} KV heads evenly")
    p = Plan()
    p.isa, p.bs, p.kv_heads, p.q_heads = isa or isa_mod.current(), block_size, kv_heads, q_heads
    gs, gt, gsh = (np.ascontiguousarray(a, np.int64) for a in (group_start, group_tokens, group_shared))
    ctx = np.ascontiguousarray(context_len, np.int32)
    # In plain Python: a step has few groups, and a NumPy call costs about what a loop step does.
    starts, members, shared, lens = gs.tolist(), gt.tolist(), gsh.tolist(), ctx.tolist()
    n_groups, n_ctx = len(shared), len(lens)
    if len(starts) != n_groups + 1 or starts[0] != 0 or starts[-1] != len(members):
        raise ValueError("groups: group_start must run from 0 to len(group_tokens), one more entry than groups")
    # The Numba driver's jobs (attention._paged_attention_template): a job per (group, KV head), or
    # per query head when there are few; cost = shared * nt + sum over members of (nb - shared).
    cost, max_nt, up = [], 1, block_size - 1
    for g in range(n_groups):
        a0, a1, sh = starts[g], starts[g + 1], shared[g]
        if a1 <= a0 or sh < 0:
            raise ValueError("groups: every group has at least one token and no negative shared count")
        c, full = sh * (a1 - a0), sh * block_size
        for t in members[a0:a1]:
            if not 0 <= t < n_ctx:
                raise ValueError("groups: a token index is out of range")
            n = lens[t]
            if n <= 0 or full > n:
                raise ValueError("groups: every token attends to at least one position, and reads its "
                                 "group's shared blocks in full")
            c += (n + up) // block_size - sh
        cost.append(c)
        if a1 - a0 > max_nt:
            max_nt = a1 - a0
    G = q_heads // kv_heads
    parts = G if n_groups * kv_heads < SPLIT_BELOW else 1
    H = G // parts
    # costliest first; a stable sort of the groups gives the jobs of a stable sort of the jobs (a
    # group's jobs are consecutive and cost the same)
    jobs = np.zeros((n_groups, kv_heads * parts, attention_job_emit.JOB_WORDS), np.int64)
    jobs[:, :, 0] = np.array(sorted(range(n_groups), key=cost.__getitem__, reverse=True), np.int64)[:, None]
    jobs[:, :, 1:3] = [(kvh, kvh * G + part * H) for kvh in range(kv_heads) for part in range(parts)]
    p.jobs = jobs.reshape(-1, attention_job_emit.JOB_WORDS)
    p.groups, p.context_len = (gs, gt, gsh), ctx
    p.n_jobs, p.H, p.max_rows = len(p.jobs), H, max_nt * H
    p.n_slots = max(1, min(p.n_jobs, native.threads()))
    p.n_tokens = max(members) + 1 if members else 0
    p.ctx_max = max(map(lens.__getitem__, members)) if members else 0
    p.d, p.checked = None, None
    return p


def _check_step(p: Plan, tables, token_row, context_len, q, out) -> None:
    """Once per step (the same arrays in every layer): q's and out's layout, and that what the kernel
    reads through the tables stays inside them."""
    if not (q.dtype == _F32 and out.dtype == _F32 and q.shape[1:] == p.q_shape and out.shape[1:] == p.q_shape
            and q.strides[1:] == p.v_inner and out.strides[1:] == p.v_inner and len(q) >= p.n_tokens
            and len(out) >= p.n_tokens and out.flags.writeable):
        raise ValueError(f"native attention: q and out must be float32 (T, {p.q_heads}, {p.d}) with contiguous "
                         "heads")
    if context_len is not p.context_len and not (
            context_len.shape == p.context_len.shape and np.array_equal(context_len, p.context_len)):
        raise ValueError("context_len differs from the one the plan was made for")
    if tables.ndim != 2 or token_row.ndim != 1 or len(token_row) < p.n_tokens:
        raise ValueError("block_tables must be (sequences, blocks) and token_row hold a row for every token")
    rows = token_row[p.groups[1]]
    if len(rows) and (rows.min() < 0 or rows.max() >= len(tables)):
        raise ValueError("token_row points outside block_tables")
    if -(-p.ctx_max // p.bs) > tables.shape[1]:
        raise ValueError("block_tables is narrower than the longest context")
    if tables.size and tables.min() < 0:
        raise ValueError("block_tables holds a negative block id")
    p.checked = (tables, token_row, context_len, q, out, int(tables.max()) + 1 if tables.size else 0)


def _ints(a):
    return a if a.dtype == _I32 and a.flags.c_contiguous else np.ascontiguousarray(a, np.int32)


def run(p: Plan, q, k_pool_layer, v_pool_layer, block_tables, token_row, context_len, scale, out) -> None:
    """out[t, h] = softmax(q[t, h] . K) V for the plan's tokens: attention.paged_attention's contract and bits.

    q, out: float32 (T, q_heads, d) with contiguous heads; k_pool_layer (blocks, kv_heads, d, bs) and
    v_pool_layer (blocks, kv_heads, bs, d) float32 with contiguous blocks' rows (as the Numba IR path
    needs); block_tables, token_row, context_len: int32 (converted if not); scale: a float, rounded to
    float32 (the Numba driver takes a numpy.float32).  Checked: the per-layer
    pools at every call, the rest when it is not the same objects as at the last call."""
    if p.n_jobs == 0:
        return
    k, v = k_pool_layer, v_pool_layer
    d = q.shape[-1]
    if d != p.d:
        p.bind(d)
    chk = p.checked
    if chk is None or chk[0] is not block_tables or chk[1] is not token_row or chk[2] is not context_len \
            or chk[3] is not q or chk[4] is not out:
        block_tables, token_row, context_len = _ints(block_tables), _ints(token_row), _ints(context_len)
        _check_step(p, block_tables, token_row, context_len, q, out)
        chk = p.checked
    if not (k.dtype == _F32 and v.dtype == _F32 and k.shape[1:] == p.k_shape and v.shape[1:] == p.v_shape
            and k.strides[2:] == p.k_inner and v.strides[2:] == p.v_inner and k.shape[0] >= chk[5]
            and v.shape[0] >= chk[5]):
        if k.shape[0] < chk[5] or v.shape[0] < chk[5]:
            raise ValueError("block_tables holds a block id outside the KV pool")
        raise ValueError(f"native attention: k must be float32 (blocks, {p.kv_heads}, {d}, {p.bs}) and v "
                         f"(blocks, {p.kv_heads}, {p.bs}, {d}), with contiguous rows")
    if scale.__class__ not in _FLOATS:   # the builtin would pass an int as its value, not as a float
        scale = float(scale)
    native.runtime().call(p.entry, p.words + (token_row, context_len, block_tables, block_tables.strides[0], q,
                                              q.strides[0], out, out.strides[0], k, k.strides[0], k.strides[1],
                                              v, v.strides[0], v.strides[1], scale), native.threads())
