"""The server against hostile and clumsy clients, in-process (ASGI) on the tiny model.

Every bad request gets a 4xx with an OpenAI-style body naming the problem, never a 500, a hang or a
traceback; a request that fails inside the engine thread is answered (and frees its queue slot)
without failing the requests running beside it; the event loop stays free while a huge body is refused.
"""

import asyncio
import json
import random
import time

import httpx
import pytest

from ponder.server.app import Server

COMPLETION = {"prompt": "the cat", "max_tokens": 2, "seed": 1, "temperature": 0.5}
CHAT = {"messages": [{"role": "user", "content": "the cat"}], "max_tokens": 2, "seed": 1}


@pytest.fixture(scope="module")
def tiny_engine(tiny_llama):
    from ponder import Engine

    return Engine.from_pretrained(str(tiny_llama[2]))


def _run(server: Server, fn):
    """fn(client, server) against the server's app in-process, with its engine thread running."""
    server.engine_loop.start()

    async def go():
        transport = httpx.ASGITransport(app=server.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as c:
            return await asyncio.wait_for(fn(c, server), 180)

    try:
        return asyncio.run(go())
    finally:
        server.engine_loop.stop()


@pytest.fixture
def serve(tiny_engine):
    """Run an async function against a fresh Server on the tiny engine: serve(fn, **server_options)."""
    servers = []

    def run(fn, **options):
        servers.append(Server(tiny_engine, "tiny", **options))
        return _run(servers[-1], fn)

    yield run
    for s in servers:
        assert s.open == 0  # every admitted prompt was answered and its slot given back


def _error(r: httpx.Response, status: int, param=None, words=()) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    assert "Traceback" not in r.text and "File \"" not in r.text
    if param is not None:
        assert err["param"] == param, err
    for w in words:
        assert w in err["message"], err
    return err


def _post_all(serve, requests):
    """POST each (path, raw body) in turn; the responses."""

    async def fn(c, server):
        return [await c.post(path, content=body, headers={"content-type": "application/json"})
                for path, body in requests]

    return serve(fn)


# -- parsing -------------------------------------------------------------------------

BAD_BODIES = [
    # (path, raw body, param the error must name, a word the message must hold)
    ("/v1/completions", b'{"prompt": "hi", "max_tokens": ' + b"9" * 5001 + b"}", "max_tokens", "digits"),
    ("/v1/completions", b"[" * 100_000, None, "nested"),
    ("/v1/completions", b'{"prompt": ' + b"[" * 40 + b"]" * 40 + b"}", "prompt" + "[0]" * 31, "nested"),
    ("/v1/completions", b'{"prompt": "hi \\ud800"}', "prompt", "surrogate"),
    ("/v1/completions", b'{"prompt": ["ok", "hi \\udfff there"]}', "prompt[1]", "surrogate"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content",
     "surrogate"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}',
     "messages[0].content[0].text", "surrogate"),
    ("/tokenize", b'{"prompt": "hi \\ud800"}', "prompt", "surrogate"),
    ("/tokenize", b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content", "surrogate"),
    ("/v1/completions", b'{"prompt": "hi", "\\ud800": 1}', None, "surrogate"),
    ("/v1/completions", b'{"prompt": "hi", "temperature": NaN}', "temperature", "NaN"),
    ("/v1/completions", b'{"prompt": "hi", "top_p": Infinity}', "top_p", "Infinity"),
    ("/v1/completions", b'{"prompt": "hi", "temperature": 1e999}', "temperature", "finite"),
    ("/v1/completions", b'{"prompt": "hi", "first_sample": 1180591620717411303424}', "first_sample", "64 bits"),
    ("/v1/completions", b'{"prompt": "hi", "seed": -9223372036854775809}', "seed", "64 bits"),
    ("/v1/completions", b'{"prompt": "hi", "metadata": {"a": [1e400]}}', "metadata.a[0]", "finite"),
    ("/detokenize", b'{"tokens": [1, 2, 99999999999999999999999]}', "tokens[2]", "64 bits"),
    ("/v1/completions", b'{"prompt": "hi"', None, "JSON"),
    ("/v1/completions", b'\xff\xfe{}', None, "UTF-8"),
]


def test_malformed_bodies_are_400_naming_the_problem(serve):
    responses = _post_all(serve, [(p, b) for p, b, _, _ in BAD_BODIES])
    for (path, body, param, word), r in zip(BAD_BODIES, responses):
        _error(r, 400, param, [word])


INT_MAX = 2**63 - 1
EXTREMES = {  # field -> values at or beyond its limits; each must be a 400 naming it, or a proper answer
    "max_tokens": [-1, INT_MAX, -INT_MAX - 1, 2**64, 1.5],
    "max_completion_tokens": [-1, INT_MAX, 2**64],
    "n": [0, -1, 65, INT_MAX, 2**64],
    "seed": [-1, INT_MAX, 2**63, 2**64],
    "temperature": [-1e-300, 5e-324, 1e308, -0.0, 2**64, INT_MAX],
    "top_p": [0, -0.0, 5e-324, 1.0000000000000002, 1e308],
    "top_k": [-2, -1, INT_MAX, 2**64],
    "min_p": [-5e-324, 5e-324, 1, 1.0000000000000002],
    "logprobs": [-1, 21, INT_MAX],
    "first_sample": [-1, INT_MAX - 1, 2**64],
    "stop_token_ids": [[-1], [INT_MAX], [2**64]],
    "presence_penalty": [1e308, 5e-324],
}


@pytest.mark.parametrize("field", sorted(EXTREMES))
def test_numeric_fields_at_their_extremes(serve, field):
    requests = []
    for v in EXTREMES[field]:
        # a prompt that leaves 8 positions of the context: a huge max_tokens still ends soon ("length")
        body = {**COMPLETION, "prompt": list(range(5, 253)), "max_tokens": 3, field: v}
        if field == "max_completion_tokens":
            del body["max_tokens"]
        requests.append(("/v1/completions", json.dumps(body).encode()))
    for v, r in zip(EXTREMES[field], _post_all(serve, requests)):
        assert r.status_code in (200, 400), (field, v, r.text)
        if r.status_code == 400:
            assert _error(r, 400)["param"].split("[")[0] == field, (v, r.text)
        else:
            choice = r.json()["choices"][0]
            assert choice["finish_reason"] in ("stop", "length"), (field, v)
            assert len(choice["logprobs"]["tokens"] if choice["logprobs"] else []) <= 256


def test_other_methods_and_routes_have_openai_bodies(serve):
    routes = {"/v1/models": "GET", "/v1/completions": "POST", "/v1/chat/completions": "POST", "/tokenize": "POST",
              "/detokenize": "POST", "/tokenizer_info": "GET", "/health": "GET", "/metrics": "GET"}

    async def fn(c, server):
        out = []
        for path, allowed in routes.items():
            for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
                if method == allowed or (method == "HEAD" and allowed == "GET"):
                    continue
                out.append((method, path, await c.request(method, path)))
        out.append(("GET", "/nowhere", await c.get("/nowhere")))
        out.append(("HEAD", "/nowhere", await c.head("/nowhere")))
        return out

    for method, path, r in serve(fn):
        status = 404 if path == "/nowhere" else 405
        assert r.status_code == status, (method, path, r.status_code)
        assert r.headers["content-type"] == "application/json", (method, path)
        if method != "HEAD":  # a HEAD response has no body, by HTTP's rules
            _error(r, status, words=[path])
        if status == 405:
            assert r.headers["allow"]


def test_tokenize_edges(serve):
    async def fn(c, server):
        return [await c.post("/tokenize", json=b) for b in
                ({"prompt": ""}, {"prompt": "", "add_special_tokens": False}, {"prompt": "the cat" * 1000})]

    empty, bare, long = serve(fn)
    assert empty.status_code == 200 and bare.json() == {"count": 0, "max_model_len": 256, "tokens": []}
    assert long.status_code == 200 and long.json()["count"] > 256  # any length, as vLLM (lm-eval measures documents)


def test_body_over_the_limit_is_413(serve, monkeypatch):
    from ponder.server import app

    monkeypatch.setattr(app, "MAX_BODY", 1000)
    r = _post_all(serve, [("/v1/completions", json.dumps({"prompt": "x" * 2000}).encode())])[0]
    _error(r, 413, words=["1000 bytes"])


# -- long prompts ---------------------------------------------------------------------

async def _health_while(c, request) -> tuple[httpx.Response, list[float]]:
    """The response to `request`, and how long each /health asked meanwhile took to answer."""
    big = asyncio.ensure_future(request)
    latencies = []
    while not big.done():
        t = time.perf_counter()
        assert (await c.get("/health")).status_code == 200
        latencies.append(time.perf_counter() - t)
        await asyncio.sleep(0.005)
    return await big, latencies


def test_health_answers_while_a_huge_prompt_is_refused(serve, tiny_engine):
    huge = json.dumps({"prompt": "the cat sat on the mat " * 230_000, "max_tokens": 1}).encode()  # 5 MB
    assert len(huge) > 5_000_000
    r, latencies = serve(lambda c, server: _health_while(c, c.post("/v1/completions", content=huge)))
    err = _error(r, 413, words=["characters", "256"])
    assert err["code"] == "context_length_exceeded"
    # Liveness, not speed: tokenizing 5 MB on the event loop stalled /health for seconds.
    assert max(latencies) < 2.0, latencies


@pytest.mark.real_model
def test_real_model_long_prompt_is_tokenized_off_the_event_loop(default_engine):
    """A prompt under the character bound but over the token limit is tokenized (seconds) on a worker
    thread, with the GIL released, and refused with 413; /health answers all the while."""
    server = Server(default_engine, "default")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    prompt = " ".join(rng.choice(words) for _ in range(60_000))  # ~360K characters, ~100K tokens
    assert len(prompt) < server.max_prompt_tokens * server.max_token_chars  # not refused unread
    r, latencies = _run(server, lambda c, s: _health_while(c, c.post("/v1/completions",
                                                                      json={"prompt": prompt, "max_tokens": 1})))
    _error(r, 413, words=["tokens"])
    assert len(latencies) > 5 and max(latencies) < 1.0, latencies  # liveness: /health was never held up


def test_a_prompt_too_long_for_the_kv_pool_is_refused_up_front(tiny_llama):
    from ponder import Engine

    engine = Engine.from_pretrained(str(tiny_llama[2]), kv_blocks=4, block_size=16)  # 64 tokens < context 256
    server = Server(engine, "tiny")
    assert server.max_prompt_tokens == 64

    async def fn(c, server):
        too_long = await c.post("/v1/completions", json={"prompt": list(range(5, 69)), "max_tokens": 1})
        fits = await c.post("/v1/completions", json={"prompt": list(range(5, 68)), "max_tokens": 1})
        text = await c.post("/v1/completions", json={"prompt": "the cat " * 2000, "max_tokens": 1})
        return too_long, fits, text

    too_long, fits, text = _run(server, fn)
    _error(too_long, 413, words=["64 tokens", "KV pool"])
    assert fits.status_code == 200, fits.text
    _error(text, 413, words=["KV pool 64"])
    assert server.engine_loop.stats.requests_started == 1  # the refused ones never reached the engine


# -- the engine thread never loses a job ---------------------------------------------

POISON = [9, 9, 9, 9]


@pytest.fixture
def poisoned(tiny_engine, monkeypatch):
    """Finishing a request whose prompt starts with POISON fails (as decoding an impossible token did)."""
    real = tiny_engine.pop_result

    def pop_result(rid):
        result = real(rid)
        if result.prompt_token_ids[:4] == POISON:
            raise RuntimeError("cannot decode token -1")
        return result

    monkeypatch.setattr(tiny_engine, "pop_result", pop_result)


def test_a_failing_request_is_answered_and_frees_its_slot(serve, poisoned):
    bad = {"prompt": POISON, "max_tokens": 2, "seed": 1}
    good = {"prompt": "the cat", "max_tokens": 4, "seed": 1, "temperature": 1.0}

    async def fn(c, server):
        alone = await c.post("/v1/completions", json=good)
        # two failing requests fill --max-queue 2; both must be answered and give their slots back
        failed = await asyncio.gather(*[c.post("/v1/completions", json=bad) for _ in range(2)])
        after = await asyncio.gather(*[c.post("/v1/completions", json=good) for _ in range(2)])
        streamed = await c.post("/v1/completions", json={**bad, "stream": True})
        return alone, failed, after, streamed

    alone, failed, after, streamed = serve(fn, max_queue=2)
    for r in failed:
        err = _error(r, 500)
        assert err["type"] == "server_error" and "decode" not in err["message"]  # internals stay in the log
    for r in after:
        assert r.status_code == 200 and r.json()["choices"] == alone.json()["choices"]
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert events[-1]["error"]["type"] == "server_error" and streamed.text.rstrip().endswith("data: [DONE]")


def test_a_failing_request_does_not_fail_its_batch(serve, poisoned):
    good = [{"prompt": p, "max_tokens": 6, "seed": 3, "temperature": 1.0, "ignore_eos": True}
            for p in ("the cat", "a dog ran", "in the hat")]

    async def fn(c, server):
        alone = [await c.post("/v1/completions", json=g) for g in good]
        mixed = await asyncio.gather(c.post("/v1/completions", json={"prompt": POISON, "max_tokens": 2}),
                                     *[c.post("/v1/completions", json=g) for g in good])
        return alone, mixed

    alone, (bad, *mixed) = serve(fn, max_queue=4)
    _error(bad, 500)
    for a, m in zip(alone, mixed):
        assert m.status_code == 200 and m.json()["choices"] == a.json()["choices"]


# -- fuzz ---------------------------------------------------------------------------

VALID = {
    "/v1/completions": COMPLETION,
    "/v1/chat/completions": CHAT,
    "/tokenize": {"prompt": "the cat", "add_special_tokens": True},
    "/detokenize": {"tokens": [5, 6, 7]},
}
FIELDS = ["prompt", "messages", "max_tokens", "max_completion_tokens", "n", "seed", "temperature", "top_p",
          "top_k", "min_p", "stop", "stop_token_ids", "logprobs", "top_logprobs", "echo", "stream", "stream_options",
          "first_sample", "ignore_eos", "tokens", "model", "presence_penalty", "logit_bias", "add_generation_prompt",
          "return_token_strs", "response_format", "user"]
HOSTILE_RAW = ["NaN", "-Infinity", "1e999", "-1e-999", "9" * 25, "-" + "9" * 5001, "1" * 4301, '"\\ud800"',
               '"\\udfff x"', '"\\u0000"', "[" * 50 + "]" * 50, '{"a":' * 40 + "1" + "}" * 40, "true", "null", '""',
               "[]", "{}", "-0", "0.0", "5e-324", "1.7976931348623157e308", "18446744073709551616",
               "9223372036854775807", "-9223372036854775808", '["a", 1, null]', '[[1, 2], []]', '[-1]', '[1e400]',
               '{"type": "text"}', '[{"role": "user", "content": "\\ud800"}]', '[{"role": "user"}]', '"x"']


def _fuzz_case(rng: random.Random) -> tuple[str, bytes]:
    path = rng.choice(list(VALID))
    body = dict(VALID[path])
    kind = rng.random()
    if kind < 0.5:  # one field set to a hostile literal (spliced in as raw JSON)
        field = rng.choice(FIELDS + list(body))
        body[field] = "@@HOSTILE@@"
        text = json.dumps(body).replace('"@@HOSTILE@@"', rng.choice(HOSTILE_RAW))
        return path, text.encode()
    raw = bytearray(json.dumps(body).encode())
    if kind < 0.85:  # byte edits of a valid body
        for _ in range(rng.randint(1, 4)):
            op, at = rng.random(), rng.randrange(len(raw) + 1)
            if op < 0.4:
                del raw[at:at + rng.randint(1, 3)]
            elif op < 0.8:
                raw[at:at] = bytes([rng.choice(b'{}[]",:\\0123456789-e.tfn \xff\xc3\x80') for _ in range(rng.randint(1, 3))])
            else:
                raw[at:at] = raw[rng.randrange(len(raw) + 1):][:rng.randint(1, 8)]
        return path, bytes(raw)
    return path, bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))  # noise


def test_fuzz_malformed_bodies_never_500(serve):
    rng = random.Random(1234)
    cases = [_fuzz_case(rng) for _ in range(400)]

    async def fn(c, server):
        out = []
        for path, body in cases:
            out.append(await c.post(path, content=body, headers={"content-type": "application/json"}))
        return out

    statuses = []
    for (path, body), r in zip(cases, serve(fn)):
        statuses.append(r.status_code)
        assert r.status_code < 500, (path, body[:200], r.text[:300])
        if r.status_code >= 400:
            _error(r, r.status_code)
        elif r.headers["content-type"].startswith("application/json"):
            r.json()
    assert statuses.count(400) > 200 and statuses.count(200) > 20  # the fuzz reaches both sides


def test_a_client_gone_while_sending_its_body_is_not_a_server_error(tiny_engine):
    server = Server(tiny_engine, "tiny")
    app, sent = server.app(), []
    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "raw_path": b"/v1/completions",
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "scheme": "http",
             "server": ("t", 80), "client": ("c", 1), "root_path": "", "http_version": "1.1", "asgi": {"version": "3.0"}}
    messages = [{"type": "http.request", "body": b'{"prompt": "th', "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    async def send(msg):
        sent.append(msg)

    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499 and server.http_status[500] == 0
