"""`ponder serve`: load the model, warm the kernels up, run uvicorn."""

from __future__ import annotations

import logging
import sys

from ponder.errors import PonderError


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_queue: int = 256, threads: int | None = None) -> int:
    import uvicorn

    from ponder import Engine, SamplingParams
    from ponder.server.app import Server

    if max_queue < 1:
        raise PonderError("--max-queue must be at least 1")
    engine = Engine.from_pretrained(model, threads=threads)
    logging.basicConfig(level=logging.INFO, format="ponder: %(message)s", stream=sys.stderr)
    # Compile the kernels now rather than on the first request (generation and scoring paths).
    warm = engine.tokenizer.encode("warm up")
    engine.generate(warm, SamplingParams(temperature=0.7, seed=0, max_tokens=2, logprobs=1))
    engine.score(warm, 1, top_logprobs=1)
    server = Server(engine, model, api_key=api_key, max_queue=max_queue)
    print(f"ponder: serving {model} on http://{host}:{port}/v1 ({server.fingerprint})", file=sys.stderr, flush=True)
    uvicorn.run(server.app(), host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=3)
    return 0
