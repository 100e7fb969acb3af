"""Server pieces in-process: incremental detokenizing, request parsing, the engine thread's resilience, 429."""

import asyncio
import queue
import random

import httpx
import pytest

from ponder.server import protocol
from ponder.loading.detokenize import IncrementalDetokenizer, TokenStrings, token_offsets
from ponder.server.protocol import APIError


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama):
    from ponder import Engine

    return Engine.from_pretrained(str(tiny_llama[2]))


# -- detokenizing ------------------------------------------------------------------

def _final(tok, ids, stop):
    text = tok.decode(ids)
    cuts = [text.find(s) for s in stop if s in text]
    return text[:min(cuts)] if cuts else text


@pytest.mark.parametrize("seed", range(20))
def test_incremental_detokenizer_random(tiny_engine, seed):
    tok = tiny_engine.tokenizer
    rng = random.Random(seed)
    ids = [rng.randrange(3, tok.vocab_size) for _ in range(rng.randint(1, 40))]
    stop = tuple(rng.sample(["e", "th", "the cat", "\u20ac", " a"], rng.randint(0, 2)))
    d = IncrementalDetokenizer(tok, stop)
    pieces = []
    for t in ids:
        d.add(t)
        pieces.append(d.take())
        if d.stop_index() is not None:
            break
    final = _final(tok, d.ids, stop)
    sent = "".join(pieces)
    assert final.startswith(sent)  # never sends text the final answer does not have
    assert sent + d.finish(final) == final
    for p in pieces[:-1]:  # a piece never ends inside a character
        assert not p.endswith("\ufffd") or "\ufffd" in final


def test_detokenizer_holds_back_stop_prefixes_and_split_characters(tiny_engine):
    tok = tiny_engine.tokenizer
    ids = tok.encode("h\u00e9llo \u20acuro the end")
    d = IncrementalDetokenizer(tok, ("uro t",))
    pieces = []
    for t in ids:
        d.add(t)
        pieces.append(d.take())
    assert "".join(pieces) == "h\u00e9llo \u20ac" and all("\ufffd" not in p for p in pieces)
    assert token_offsets(tok, tok.encode("a\u20acb")) == [0, 1, 1, 1, 2]


def test_token_strings_bytes(tiny_engine):
    tok = tiny_engine.tokenizer
    s = TokenStrings(tok)
    ids = tok.encode("\u20ac")
    assert bytes(b for t in ids for b in s.bytes(t)) == "\u20ac".encode()
    assert s.text(ids[0]).startswith("bytes:\\x")
    assert s.text(2) == "<|im_end|>" and bytes(s.bytes(2)) == b"<|im_end|>"


# -- parsing -----------------------------------------------------------------------

def test_parse_completion_fields():
    r = protocol.parse_completion({"prompt": [[1, 2], [3]], "max_completion_tokens": 5, "n": 2, "seed": 4,
                                   "top_k": -1, "stop": "x", "logprobs": 3, "echo": True, "user": "me",
                                   "stream": True, "stream_options": {"include_usage": True}}, 256)
    assert r.prompts == [[1, 2], [3]] and r.max_tokens == 5 and r.params.n == 2 and r.params.top_k == 0
    assert r.params.stop == ("x",) and r.logprobs == 3 and r.params.logprobs == 3 and r.echo and r.include_usage
    assert protocol.parse_completion({"prompt": "a"}, 256).max_tokens == protocol.DEFAULT_COMPLETION_TOKENS
    req, messages, add_gen = protocol.parse_chat({"messages": [{"role": "user", "content": "x"}]}, 256)
    assert req.max_tokens is None and req.params.max_tokens == 256 and add_gen
    assert messages == [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("field", sorted(protocol.IGNORED))
def test_ignored_fields(field):
    """An ignored field is accepted and changes nothing in the parsed request."""
    body = {"messages": [{"role": "user", "content": "x"}], "temperature": 0.5, "seed": 3}
    assert protocol.parse_chat({**body, field: "anything"}, 256) == protocol.parse_chat(body, 256)
    completion = {"prompt": "x", "max_tokens": 3}
    assert protocol.parse_completion({**completion, field: 1}, 256) == protocol.parse_completion(completion, 256)


@pytest.mark.parametrize("field", sorted(protocol.NEUTRAL_ONLY))
def test_neutral_only_fields_refuse_other_values(field):
    with pytest.raises(APIError) as e:
        protocol.parse_chat({"messages": [{"role": "user", "content": "x"}], field: {"not": "neutral"}}, 256)
    assert e.value.param == field and e.value.status == 400


# -- the engine thread ----------------------------------------------------------------

def test_engine_thread_survives_a_failing_step(tiny_engine, monkeypatch):
    from ponder import SamplingParams
    from ponder.server.engine_loop import EngineLoop, Job

    loop = EngineLoop(tiny_engine)
    real_step, calls = tiny_engine.step, []

    def flaky_step(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real_step(**kwargs)

    monkeypatch.setattr(tiny_engine, "step", flaky_step)
    loop.start()
    try:
        def run(params):
            q = queue.Queue()
            loop.submit(Job("generate", [5, 6, 7], q.put, params))
            while True:
                msg = q.get(timeout=30)
                if msg[0] != "tokens":
                    return msg

        first = run(SamplingParams(max_tokens=5, ignore_eos=True, seed=0))
        assert first[0] == "error" and "boom" in str(first[1])
        second = run(SamplingParams(max_tokens=5, ignore_eos=True, seed=0))
        assert second[0] == "done" and len(second[1].token_ids) == 5
        bad = run(SamplingParams(max_tokens=5))
        assert bad[0] == "done"
        q = queue.Queue()
        loop.submit(Job("generate", [10**6], q.put, SamplingParams()))  # a bad prompt: that job's error only
        assert q.get(timeout=30)[0] == "error"
        assert loop.is_alive()
    finally:
        loop.stop()


def test_queue_full_is_429(tiny_engine):
    from ponder.server.app import Server

    server = Server(tiny_engine, "tiny", max_queue=1)
    server.engine_loop.start()

    async def go():
        transport = httpx.ASGITransport(app=server.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            long = asyncio.ensure_future(c.post("/v1/completions", json={"prompt": "the", "max_tokens": 150,
                                                                         "ignore_eos": True}))
            while server.open == 0:
                await asyncio.sleep(0.001)
            r = await c.post("/v1/completions", json={"prompt": "the", "max_tokens": 1})
            return r, await long

    try:
        busy, first = asyncio.run(go())
    finally:
        server.engine_loop.stop()
    assert first.status_code == 200
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "queue_full"
    assert server.open == 0


def test_cli_serve_errors_are_one_line(capsys):
    from ponder.cli.main import main

    assert main(["serve", "-m", "/no/such/model.gguf"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ponder: error:") and len(err.strip().splitlines()) == 1
    assert main(["serve", "-m", "/no/such/model.gguf", "--max-queue", "0"]) == 2


def test_serve_kv_memory_sizes():
    from ponder.errors import PonderError
    from ponder.server.serve import parse_size, serve

    assert parse_size("512M") == 512 << 20 and parse_size("2g") == 2 << 30 and parse_size("1.5GiB") == 3 << 29
    assert parse_size("65536") == 65536
    for bad in ("", "lots", "-1G", "1T", "1e9"):
        with pytest.raises(PonderError, match="--kv-memory"):
            parse_size(bad)
    with pytest.raises(PonderError, match="--kv-memory must be at least 1M"):
        serve("/no/such/model.gguf", kv_memory=1000)  # refused before the model loads
