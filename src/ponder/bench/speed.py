"""Decode and prefill speed of ponder and of llama.cpp (through llama-cpp-python), side by side.

Both engines run the same GGUF file with the same thread count in one process,
one after the other; each figure is the median of several runs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from ponder.engine.sampling_params import SamplingParams
from ponder.errors import PonderError

FILLER = ("The quick brown fox jumps over the lazy dog while the scientist counts 1, 2, 3 and explains why "
          "the sky is blue, the sea is salty and numbers like 3.14159 never end. ")


@dataclass
class Figure:
    engine: str
    tok_s: float
    runs: list[float]


def prompt_ids(tokenizer, n: int, variant: int = 0) -> list[int]:
    """n tokens of English-like text; `variant` changes the first token so no cache can serve it."""
    ids = tokenizer.encode(FILLER * (n // 20 + 2))[:n]
    if variant:
        ids[0] = 1000 + variant  # any ordinary token will do; it only has to differ
    return ids


def ponder_prefill(engine, n: int, repeats: int) -> Figure:
    runs = []
    for r in range(repeats + 1):
        ids = prompt_ids(engine.tokenizer, n, r + 1)
        t = time.perf_counter()
        engine.generate(ids, SamplingParams(temperature=0, max_tokens=1))
        if r:  # the first run warms up
            runs.append(n / (time.perf_counter() - t))
    return Figure("ponder", statistics.median(runs), runs)


def ponder_decode(engine, n: int, repeats: int, prompt_len: int = 32) -> Figure:
    runs = []
    for r in range(repeats + 1):
        ids = prompt_ids(engine.tokenizer, prompt_len, r + 1)
        t0 = time.perf_counter()
        engine.generate(ids, SamplingParams(temperature=0, max_tokens=1))
        t1 = time.perf_counter()
        engine.generate(ids, SamplingParams(temperature=0, max_tokens=n + 1, ignore_eos=True))
        t2 = time.perf_counter()
        if r:
            runs.append(n / ((t2 - t1) - (t1 - t0)))
    return Figure("ponder", statistics.median(runs), runs)


def _llama(path: str, threads: int, n_ctx: int = 2048):
    try:
        from llama_cpp import Llama
    except ImportError:
        raise PonderError("--vs llama.cpp needs llama-cpp-python: pip install 'ponder[bench]'") from None
    import llama_cpp

    # llama.cpp's AMX weight repacking died with SIGILL on a KVM guest of an AMX Xeon
    # (2026-12-01) although the CPU reports AMX: keep llama.cpp on its AVX-512 kernels there.
    default = llama_cpp.llama_cpp.llama_model_default_params
    llama_cpp.llama_cpp.llama_model_default_params = lambda: model_params(default)
    try:
        return Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=n_ctx, n_batch=512,
                     verbose=False)
    finally:
        llama_cpp.llama_cpp.llama_model_default_params = default


def model_params(default=None):
    """llama.cpp's default model parameters, without the AMX buffer type on CPUs that have AMX."""
    import llama_cpp

    from ponder.bench import machine

    p = (default or llama_cpp.llama_cpp.llama_model_default_params)()
    if machine.cpu_info()["amx"] and hasattr(p, "use_extra_bufts"):
        p.use_extra_bufts = False
    return p


def llama_prefill(path: str, tokenizer, threads: int, n: int, repeats: int) -> Figure:
    llm = _llama(path, threads)
    runs = []
    for r in range(repeats + 1):
        ids = prompt_ids(tokenizer, n, r + 1)
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        if r:
            runs.append(n / (time.perf_counter() - t))
    return Figure("llama.cpp", statistics.median(runs), runs)


def llama_decode(path: str, tokenizer, threads: int, n: int, repeats: int, prompt_len: int = 32) -> Figure:
    llm = _llama(path, threads)
    runs = []
    for r in range(repeats + 1):
        ids = prompt_ids(tokenizer, prompt_len, r + 1)
        llm.reset()
        llm.eval(ids)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t = time.perf_counter()
        for _ in range(n):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if r:
            runs.append(n / (time.perf_counter() - t))
    return Figure("llama.cpp", statistics.median(runs), runs)
