"""llama.cpp's batched decode with a shared prompt, through llama-cpp-python's low-level API.

The prompt is decoded once into sequence 0 and its KV copied (in a unified
cache: shared, not duplicated) to the other sequences, which then decode one
token each per llama_decode call: llama.cpp's own parallel-sampling recipe.
"""

from __future__ import annotations

import time

import numpy as np

from ponder.errors import PonderError


def batched_decode(path: str, threads: int, prompt: list[int], n_seqs: int, n_new: int) -> dict:
    try:
        import llama_cpp as L
    except ImportError:
        raise PonderError("--vs llama.cpp needs llama-cpp-python: pip install 'ponder[bench]'") from None
    L.llama_backend_init()
    from ponder.bench.speed import model_params

    model = L.llama_model_load_from_file(path.encode(), model_params())
    cp = L.llama_context_default_params()
    cp.n_ctx = len(prompt) + n_seqs * (n_new + 1) + 64
    cp.n_batch = cp.n_ubatch = max(512, n_seqs)
    cp.n_seq_max = n_seqs
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified = True
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    batch = L.llama_batch_init(max(len(prompt), n_seqs), 0, n_seqs)
    try:
        def submit(items):  # items: (token, pos, seq, want_logits)
            batch.n_tokens = len(items)
            for i, (tok, pos, seq, want) in enumerate(items):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = want
            if L.llama_decode(ctx, batch) != 0:
                raise PonderError("llama_decode failed")

        def argmax(i):
            return int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(vocab,))))

        t0 = time.perf_counter()
        submit([(t, p, 0, p == len(prompt) - 1) for p, t in enumerate(prompt)])
        first = argmax(len(prompt) - 1)
        mem = L.llama_get_memory(ctx)
        for s in range(1, n_seqs):
            L.llama_memory_seq_cp(mem, 0, s, -1, -1)
        t1 = time.perf_counter()
        toks = [first] * n_seqs
        for step in range(n_new):
            submit([(toks[s], len(prompt) + step, s, True) for s in range(n_seqs)])
            toks = [argmax(s) for s in range(n_seqs)]
        t2 = time.perf_counter()
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        L.llama_model_free(model)
    return {"prefill_s": t1 - t0, "decode_s": t2 - t1, "decode_tok_s": n_seqs * n_new / (t2 - t1),
            "total_tok_s": n_seqs * n_new / (t2 - t0)}
