"""`ponder serve`: load the model, warm the kernels up, run uvicorn."""

from __future__ import annotations

import logging
import os
import re
import sys

from ponder.errors import PonderError

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    """'512M', '2G', '1.5g', '65536' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not m:
        raise PonderError(f"--kv-memory {text!r} is not a size (e.g. 512M, 2G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int = 256, threads: int | None = None, kv_memory: int | None = None,
          speculative: str | None = None) -> int:
    import uvicorn

    from ponder import Engine, SamplingParams
    from ponder.server.app import Server

    if max_queue < 1:
        raise PonderError("--max-queue must be at least 1")
    if kv_memory is not None and kv_memory < 1 << 20:
        raise PonderError(f"--kv-memory must be at least 1M (got {kv_memory} bytes)")
    # Long prompts are tokenized with encode_batch (it releases the GIL); keep its thread pool off so
    # that `tokenizers` has nothing to warn about should this process ever fork.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if api_key is None:  # from the environment, so that it need not show in `ps`
        api_key = os.environ.get("PONDER_API_KEY") or None
    kv = {} if kv_memory is None else {"kv_memory": kv_memory}
    if speculative is not None:
        kv["speculative"] = speculative
    engine = Engine.from_pretrained(model, threads=threads, **kv)
    logging.basicConfig(level=logging.INFO, format="ponder: %(message)s", stream=sys.stderr)
    # Compile the kernels now rather than on the first request (generation and scoring paths).
    warm = engine.tokenizer.encode("warm up")
    engine.generate(warm, SamplingParams(temperature=0.7, seed=0, max_tokens=2, logprobs=1))
    engine.score(warm, 1, top_logprobs=1)
    server = Server(engine, model, api_key=api_key, max_queue=max_queue)
    print(f"ponder: serving {model} on http://{host}:{port}/v1 ({server.fingerprint}); KV pool "
          f"{server.kv_tokens} tokens, prompts up to {server.max_prompt_tokens} tokens"
          + ("; API key required" if api_key else ""), file=sys.stderr, flush=True)
    uvicorn.run(server.app(), host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=3)
    return 0
