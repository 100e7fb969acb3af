"""The Token Recycling prior: one successor table per model, built once from the model's own answers.

A request's Token Recycling table (token_recycling.py) learns only from its own
steps, so it starts cold and its first drafts are blind.  The prior is a warm start
that is the same for every request: the model's greedy answers to a fixed, built-in
list of calibration prompts (disjoint from bench/spec_decode.QUESTIONS, which measure
it).  Each request starts from the prior and updates its own copy, so speed stays
reproducible and independent of other requests; tokens never depend on it.

Building: one batch of greedy answers with their top-K alternatives
(SamplingParams.logprobs = K).  The alternatives of answer token i are the top-K of
the logits that followed token i - 1 (the prompt's last token for i = 0): what the
table records.  A token's successors are ranked by their probability summed over
its occurrences (ties: the lower id first).  For SmolLM2-135M that is 16 answers of
up to 64 tokens, a few seconds on 2 quiet cores, once per model file; `notice` hooks
(the CLI's compile notice) say so when it happens.

Cache: $PONDER_HOME/recycling/<model file>-<hash of its path>-a<bits>.prior.  The
header holds the model file's identity (model/weight_cache.file_identity), the
activation bits, K, a hash of the calibration prompts and answer length, the
vocabulary size and a checksum of the table.  A changed model file, another
version, list or K, or a corrupt file is rebuilt and replaced (written atomically,
weight_cache.write_atomic), never trusted.  Models whose packed weights are too
small for the weight cache (test models) get no prior: building it would cost
more than it saves.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from collections.abc import Callable

import numpy as np

from ponder.model.weight_cache import checksum, file_identity, write_atomic

MAGIC = b"PONDERRP"
VERSION = 1
_HEAD = struct.Struct("<8sIQ")  # magic, version, header length
MAX_TOKENS = 64  # answer length of each calibration prompt (longer answers add little: BENCHMARKS.md)

# Varied chat requests (explanations, code, lists, letters, poems, recipes, history, science),
# none of them one of bench/spec_decode.QUESTIONS.
CALIBRATION = (
    "What causes the seasons on Earth?",
    "Write a Python function that checks whether a string is a palindrome.",
    "Give me five ideas for a rainy weekend.",
    "Explain how a refrigerator keeps food cold.",
    "Write a haiku about the sea.",
    "What are the main differences between Python and JavaScript?",
    "Write a short story about a robot who learns to paint.",
    "List some healthy breakfast options.",
    "Explain recursion with an example in Python.",
    "Write an email asking my manager for a day off.",
    "What were the main causes of World War I?",
    "Give me a simple recipe for pancakes.",
    "How do vaccines work?",
    "Explain what an API is to a non-programmer.",
    "How can I save money on groceries?",
    "Describe the life cycle of a butterfly.",
)

# Called with a one-line message when a prior is being built and when it is done (the CLI
# prints them; the library itself prints nothing).
notice: list[Callable[[str], None]] = []


def cache_path(source: str, bits: int) -> str:
    from ponder.loading.registry import ponder_home

    tag = hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:16]
    return os.path.join(ponder_home(), "recycling", f"{os.path.basename(source)[:64]}-{tag}-a{bits}.prior")


def _key(source: str, bits: int, k: int, prompts, max_tokens: int, vocab: int) -> dict:
    calib = hashlib.sha256(json.dumps([list(prompts), max_tokens]).encode()).hexdigest()[:16]
    return {"identity": file_identity(source), "bits": bits, "k": k, "calibration": calib, "vocab": vocab}


def build(model, bits: int, threads: int | None, k: int, prompts=CALIBRATION,
          max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """succ[vocab, k] (-1 where unknown) from the model's greedy answers to `prompts`, all in one batch."""
    from ponder.engine.llm_engine import Engine
    from ponder.engine.sampling_params import SamplingParams

    engine = Engine(model, threads=threads, activation_bits=bits, prefix_cache=False, speculative="off")
    chats = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]  # or token ids
    results = engine.generate(chats, SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=k))
    vocab = model.config.vocab_size
    mass: dict[int, dict[int, float]] = {}
    for r in results:
        out = r.outputs[0]
        before = [r.prompt_token_ids[-1]] + list(out.token_ids[:-1])
        for prev, alternatives in zip(before, out.top_logprobs):
            m = mass.setdefault(prev, {})
            for tok, lp in alternatives:
                m[tok] = m.get(tok, 0.0) + float(np.exp(lp))
    succ = np.full((vocab, k), -1, np.int32)
    for prev, m in mass.items():
        best = sorted(m.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        succ[prev, :len(best)] = [t for t, _ in best]
    return succ


def _checksum(table: np.ndarray) -> list[int]:
    words = table.reshape(-1)
    return checksum(np.append(words, np.int32(0)) if words.size % 2 else words)  # whole 64-bit words


def _read(path: str, key: dict) -> tuple[np.ndarray | None, str]:
    """(table, "hit"), or (None, "empty" | "stale" | "corrupt")."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None, "empty"
    try:
        magic, version, n = _HEAD.unpack_from(blob)
        if magic != MAGIC or version != VERSION or _HEAD.size + n > len(blob):
            raise ValueError("not a prior of this version")
        head = json.loads(blob[_HEAD.size:_HEAD.size + n])
        if head.get("key") != key:
            return None, "stale"
        data = np.frombuffer(blob, np.int32, offset=_HEAD.size + n).copy()
        if data.size != key["vocab"] * key["k"] or _checksum(data) != head["checksum"]:
            raise ValueError("checksum or size mismatch")
        table = data.reshape(key["vocab"], key["k"])
        if table.min() < -1 or table.max() >= key["vocab"]:
            raise ValueError("token out of range")
        return table, "hit"
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        return None, "corrupt"


def load_or_build(model, bits: int, threads: int | None, k: int, prompts=CALIBRATION,
                  max_tokens: int = MAX_TOKENS) -> tuple[np.ndarray, str]:
    """The model's prior (read-only) and where it came from: "hit", or "built" (after "empty",
    "stale" or "corrupt", the file is replaced)."""
    source = model.weights.source  # the model file
    key = _key(source, bits, k, prompts, max_tokens, model.config.vocab_size)
    path = cache_path(source, bits)
    table, status = _read(path, key)
    if table is None:
        for say in notice:
            say(f"ponder: building the Token Recycling prior of {os.path.basename(source)} "
                f"({len(prompts)} greedy answers, once; later runs read it from the cache)")
        t0 = time.perf_counter()
        table = build(model, bits, threads, k, prompts, max_tokens)
        head = json.dumps({"key": key, "checksum": _checksum(table)}).encode()
        write_atomic(path, [_HEAD.pack(MAGIC, VERSION, len(head)), head, memoryview(table)])
        for say in notice:
            say(f"ponder: built the Token Recycling prior in {time.perf_counter() - t0:.0f} s ({status} before)")
        status = "built"
    table = np.array(table)  # own, aligned memory, never written
    table.setflags(write=False)
    return table, status
