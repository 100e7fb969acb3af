"""The machine's limits: memory read bandwidth (measured) and peak arithmetic (from the CPU).

Decode of a small model is bound by how fast the weights stream from DRAM, and
prefill by arithmetic, so every benchmark reports its figure as a fraction of
these two.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numba
import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=True, cache=True)
def _read_all(a):
    # fastmath is fine here: a bandwidth probe, not a result anyone uses
    total = 0.0
    for i in prange(a.shape[0]):
        total += a[i]
    return total


def memory_bandwidth(threads: int, nbytes: int = 1 << 30, repeats: int = 7) -> float:
    """Median read bandwidth in bytes/s over an array much larger than the caches."""
    numba.set_num_threads(threads)
    a = np.ones(nbytes // 8, np.float64)
    _read_all(a)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        _read_all(a)
        times.append(time.perf_counter() - t)
    return nbytes / statistics.median(times)


def cpu_info() -> dict:
    name, mhz, flags = platform.processor() or "unknown", None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    name = value
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"name": name, "mhz": mhz or 2000.0, "avx512": "avx512f" in flags, "vnni": "avx512_vnni" in flags,
            "amx": "amx_int8" in flags, "cores": os.cpu_count()}


def peak_ops(threads: int) -> dict:
    """Peak fp32 FLOP/s and int8 OP/s for `threads` cores, from the clock and the vector units.

    Two 256-bit FMA pipes (Zen 4 runs AVX-512 on them double-pumped, AVX2 CPUs have
    two 256-bit FMAs): 32 fp32 FLOP per cycle per core.  VNNI `vpdpbusd` does 4
    multiply-adds per 32-bit lane: 4x that in int8 operations.
    """
    info = cpu_info()
    hz = info["mhz"] * 1e6
    fp32 = threads * hz * 32
    return {"fp32_flops": fp32, "int8_ops": fp32 * (4 if info["vnni"] else 2)}


def resident_bytes() -> int:
    """This process's resident set size (Linux), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0
