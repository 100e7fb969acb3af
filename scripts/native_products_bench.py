"""The model's weight products on the native runtime against the Numba drivers, interleaved in one process.

    python scripts/native_products_bench.py [--model smollm2-135m] [--threads 2] [--rounds 9]

Every product of one forward step (per layer: QKV, O, gate+up, down; then the output head) as
`qmatmul.linear16` (quantize + multiply, the default path), at M = 1, 4, 8, 16 tokens.  The
machine drifts by 1.5x within seconds, so the two run alternately, round by round, and each
round's time is the median of a few passes.  Before each round the other side's threads are
left to park (the native pool's workers after ~0.1 ms, libgomp's after its spin count): a
spinning thread of one would slow the other down.  Prints medians and minima of the rounds,
the ratio Numba / native (> 1: native faster), and whether the bits are the same.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--ms", default="1,4,8,16")
    args = ap.parse_args()

    import numba

    from ponder.engine.model_runner import ModelRunner
    from ponder.kernels import isa, native, qmatmul
    from ponder.loading.model_files import load_model

    numba.set_num_threads(args.threads)
    native.set_threads(args.threads)
    fm = ModelRunner(load_model(args.model).weights, 16, args.threads).model
    mats = [p.packed for layer in fm.layers for g in (layer.qkv, layer.wo, layer.gate_up, layer.w_down)
            for p in getattr(g, "parts", [g])] + [fm.output.packed]
    print(f"{isa.describe()}, {args.threads} threads, {len(mats)} products per step")
    rng = np.random.default_rng(0)
    for M in map(int, args.ms.split(",")):
        xs = [rng.standard_normal((M, m.cols)).astype(np.float32) for m in mats]

        def step():
            return [qmatmul.linear16(m, x) for m, x in zip(mats, xs)]

        times = {True: [], False: []}
        outs = {}
        for r in range(2 * args.rounds + 2):
            nat = r % 2 == 0
            native.active = nat
            time.sleep(0.02)   # the other side's threads park
            outs[nat] = step()
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                step()
                ts.append(time.perf_counter() - t)
            if r >= 2:   # the first pair warms up
                times[nat].append(float(np.median(ts)))
        same = all(np.array_equal(a.view(np.uint32), b.view(np.uint32)) for a, b in zip(outs[True], outs[False]))
        n, b = np.array(times[True]) * 1e3, np.array(times[False]) * 1e3
        print(f"M={M:3d}: native {np.median(n):6.2f} ms (min {n.min():6.2f}), Numba {np.median(b):6.2f} ms "
              f"(min {b.min():6.2f}); Numba/native median {np.median(b / n):.2f}x, min {b.min() / n.min():.2f}x; "
              f"same bits: {same}")
    native.active = True


if __name__ == "__main__":
    main()
