"""Paged attention on the native runtime's pool against the Numba driver, interleaved in one process.

    python scripts/native_attention_bench.py [--threads 2] [--rounds 9] [--layers 30]

SmolLM2-135M's attention shape (9 query heads, 3 KV heads, head dim 64, KV blocks of 16) with
random K/V, for the steps the engine runs: decode of one sequence at context 300, 16 forks of
one prompt at context 300 (prefix groups: the prompt's blocks shared), and a 256-token prefill
chunk (prefix groups of 4 tokens).  A timed step is `--layers` calls, one per layer's pool (as
a forward step makes them), the native side including its plan (made once per step).  The two
sides run alternately, round by round, each round the median of a few passes, after a pause
that lets the other side's threads park (see native_products_bench.py).  Prints per-layer
medians and minima, the ratio Numba / native (> 1: native faster), and whether the bits agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

HEADS, KVH, D, BS = 9, 3, 64, 16


def step_inputs(ctx_lens, layers, shared_prefix=0, seed=0):
    rng = np.random.default_rng(seed)
    n = len(ctx_lens)
    width = max(-(-c // BS) for c in ctx_lens)
    tables = np.zeros((n, width), np.int32)
    nxt = shared_prefix
    for s, c in enumerate(ctx_lens):
        for b in range(-(-c // BS)):
            tables[s, b] = b if b < shared_prefix else nxt
            nxt += b >= shared_prefix
    k = rng.standard_normal((layers, nxt, KVH, D, BS)).astype(np.float32)
    v = rng.standard_normal((layers, nxt, KVH, BS, D)).astype(np.float32)
    return tables, k, v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--layers", type=int, default=30)
    args = ap.parse_args()

    import numba

    from ponder.kernels import attention, attention_groups, attention_native, isa, native

    numba.set_num_threads(args.threads)
    native.set_threads(args.threads)
    L = args.layers
    scale = np.float32(D ** -0.5)
    rng = np.random.default_rng(1)
    cases = []
    tables, k, v = step_inputs([300], L)
    cases.append(("decode, 1 seq, ctx 300", tables, np.zeros(1, np.int32), np.array([300], np.int32), k, v))
    tables, k, v = step_inputs([300] * 16, L, shared_prefix=16)   # a 256-token prompt shared
    cases.append(("16 forks, ctx 300", tables, np.arange(16, dtype=np.int32), np.full(16, 300, np.int32), k, v))
    tables, k, v = step_inputs([256], L)
    cases.append(("prefill chunk, 256 tokens", tables, np.zeros(256, np.int32), np.arange(1, 257, dtype=np.int32),
                  k, v))
    print(f"{isa.describe()}, {args.threads} threads, {L} layers a step, per-layer times")
    for name, tables, rows, ctx, k, v in cases:
        n = len(rows)
        q = rng.standard_normal((n, HEADS, D)).astype(np.float32)
        outs = {True: np.empty_like(q), False: np.empty_like(q)}

        def step(nat):
            groups = attention_groups.prefix_groups(tables, rows, ctx, BS)
            out = outs[nat]
            if nat:
                p = attention_native.plan(groups, ctx, BS, KVH, HEADS)
                for li in range(L):
                    attention_native.run(p, q, k[li], v[li], tables, rows, ctx, scale, out)
            else:
                for li in range(L):
                    attention.paged_attention(q, k[li], v[li], tables, rows, ctx, scale, out, *groups)

        times = {True: [], False: []}
        for r in range(2 * args.rounds + 2):
            nat = r % 2 == 0
            time.sleep(0.02)   # the other side's threads park
            step(nat)
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                step(nat)
                ts.append(time.perf_counter() - t)
            if r >= 2:   # the first pair warms up
                times[nat].append(float(np.median(ts)) / L)
        same = np.array_equal(outs[True].view(np.uint32), outs[False].view(np.uint32))
        a, b = np.array(times[True]) * 1e6, np.array(times[False]) * 1e6
        print(f"{name:27s}: native {np.median(a):8.1f} us (min {a.min():8.1f}), Numba {np.median(b):8.1f} us "
              f"(min {b.min():8.1f}); Numba/native median {np.median(b / a):.2f}x, min {b.min() / a.min():.2f}x; "
              f"same bits: {same}")


if __name__ == "__main__":
    main()
