"""`ponder serve` on the default model (SmolLM2-135M): the openai client, plain and streaming."""

import openai
import pytest

from ponder.server.process import ServerProcess

pytestmark = pytest.mark.real_model


def test_real_model_chat(default_model_path, default_engine, tmp_path):
    from ponder import SamplingParams
    from ponder.loading import registry

    with ServerProcess(default_model_path, log_path=str(tmp_path / "serve.log")) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        ask = dict(model=model, messages=[{"role": "user", "content": "What is 17 + 25?"}], max_completion_tokens=24,
                   temperature=0)
        r = client.chat.completions.create(**ask)
        streamed = "".join(c.choices[0].delta.content or ""
                           for c in client.chat.completions.create(stream=True, **ask) if c.choices)
        assert r.choices[0].message.content and streamed == r.choices[0].message.content
        messages = [{"role": "user", "content": "What is 17 + 25?"}]
        [local] = default_engine.generate(messages, SamplingParams(temperature=0, max_tokens=24))
        assert r.choices[0].message.content == local.text  # the server answers as the Python API does
        assert r.system_fingerprint.split("-")[0] == registry.file_sha256(default_model_path)
        again = client.chat.completions.create(**ask)
        assert again.usage.prompt_tokens_details.cached_tokens > 0


def test_real_model_long_prompt_is_tokenized_off_the_event_loop(default_engine):
    """A prompt under the character bound but over the token limit is tokenized (seconds) on a worker
    thread, with the GIL released, and refused with 413; /health answers all the while."""
    import asyncio
    import random
    import time

    import httpx

    from ponder.server.app import Server

    server = Server(default_engine, "default")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    prompt = " ".join(rng.choice(words) for _ in range(60_000))  # ~360K characters, ~100K tokens
    assert len(prompt) < server.max_prompt_tokens * server.max_token_chars  # not refused unread
    server.engine_loop.start()

    async def go():
        transport = httpx.ASGITransport(app=server.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
            big = asyncio.ensure_future(c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1}))
            latencies = []
            while not big.done():
                t = time.perf_counter()
                assert (await c.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - t)
                await asyncio.sleep(0.01)
            return await big, latencies

    try:
        r, latencies = asyncio.run(go())
    finally:
        server.engine_loop.stop()
    assert r.status_code == 413 and "tokens" in r.json()["error"]["message"], r.text
    assert len(latencies) > 5 and max(latencies) < 1.0, latencies  # liveness: /health was never held up
