"""`ponder serve` over the wire: the real `openai` client and raw HTTP against a subprocess on 127.0.0.1."""

import json
import time

import httpx
import openai
import pytest

from ponder.server.process import ServerProcess

KEY = "test-key"


@pytest.fixture(scope="module")
def server(tiny_llama, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with ServerProcess(str(tiny_llama[2]), api_key=KEY, log_path=str(log)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=server.headers(), timeout=60) as c:
        yield c


def _error(r: httpx.Response, status: int, param=None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in r.text
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


# -- basics -----------------------------------------------------------------------

def test_models_health_metrics(server, client, http):
    models = client.models.list().data
    assert len(models) == 1 and models[0].owned_by == "ponder"
    assert http.get("/health").json()["status"] == "ok"
    text = httpx.get(server.url + "/metrics").text  # no key needed
    for name in ("ponder_queue_depth", "ponder_running_requests", "ponder_tool_samples", "ponder_tokens_per_second",
                 "ponder_prefix_cache_hit_rate"):
        assert f"\n{name} " in "\n" + text


def test_api_key_required(server):
    r = httpx.post(server.url + "/v1/completions", json={"prompt": "hi"})
    _error(r, 401)
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_completion_plain_and_fingerprint(client, model):
    r = client.completions.create(model=model, prompt="the cat is", max_tokens=8, temperature=0.8, seed=7)
    assert r.object == "text_completion" and len(r.choices) == 1
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 8
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    sha, version = r.system_fingerprint.split("-", 1)  # "<model sha256>-ponder<version>-kernels<...>-a<bits>"
    assert len(sha) == 64 and version.startswith("ponder")
    again = client.completions.create(model=model, prompt="the cat is", max_tokens=8, temperature=0.8, seed=7)
    assert again.choices[0].text == r.choices[0].text
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # the prompt's blocks were cached


def test_chat_plain(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=6, seed=1, temperature=0.5)
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.completion_tokens <= 6


def test_max_completion_tokens_only(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                       max_completion_tokens=3, seed=2, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    r = client.completions.create(model=model, prompt="in the", seed=2, extra_body={"max_completion_tokens": 4,
                                                                                      "ignore_eos": True})
    assert r.usage.completion_tokens == 4


def test_n_and_seed(client, model):
    r = client.completions.create(model=model, prompt="and the", max_tokens=6, n=4, seed=11, temperature=1.0)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    assert len({c.text for c in r.choices}) > 1  # different samples
    for i in range(4):  # sample i is the same as in any other run with the same seed
        again = client.completions.create(model=model, prompt="and the", max_tokens=6, n=4, seed=11,
                                          temperature=1.0)
        assert again.choices[i].text == r.choices[i].text


# -- streaming -------------------------------------------------------------------------

@pytest.mark.parametrize("stop", [None, ["e"], ["the", "an"]])
def test_stream_equals_plain_completion(client, model, stop):
    kw = dict(model=model, prompt="is the", max_tokens=24, temperature=1.0, seed=5, stop=stop, n=2)
    plain = client.completions.create(**kw)
    parts = {0: "", 1: ""}
    finish = {}
    for chunk in client.completions.create(stream=True, **kw):
        for c in chunk.choices:
            parts[c.index] += c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    for c in plain.choices:
        assert parts[c.index] == c.text
        assert finish[c.index] == c.finish_reason
        if stop:
            assert not any(s in c.text for s in stop)


def test_stream_chat_with_usage(client, model):
    kw = dict(model=model, messages=[{"role": "user", "content": "tell me"}], max_tokens=12, seed=3, temperature=0.9)
    plain = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_multibyte_utf8(client, model, http):
    """Tokens that split a character never reach the client as a broken character."""
    r = client.completions.create(model=model, prompt="€ é ü", max_tokens=40, temperature=1.5, seed=9,
                                  extra_body={"ignore_eos": True})
    with http.stream("POST", "/v1/completions", json={"prompt": "€ é ü", "max_tokens": 40, "temperature": 1.5,
                                                      "seed": 9, "ignore_eos": True, "stream": True}) as s:
        pieces = [json.loads(line[6:])["choices"][0]["text"] for line in s.iter_lines()
                  if line.startswith("data: {")]
    assert "".join(pieces) == r.choices[0].text
    # a piece ends in U+FFFD only where the bytes are truly invalid, which the plain text shows too
    assert sum(p.count("\ufffd") for p in pieces) == r.choices[0].text.count("\ufffd")


def test_client_disconnect_aborts_and_frees_blocks(server, http):
    with http.stream("POST", "/v1/completions", json={"prompt": "the the", "max_tokens": 200, "stream": True,
                                                      "ignore_eos": True, "seed": 1}) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                break  # one chunk, then hang up
    import time

    for _ in range(100):
        m = _metrics(http)
        if m.get('ponder_requests_finished_total{reason="abort"}', 0) >= 1 and m["ponder_kv_blocks_used"] == 0:
            break
        time.sleep(0.05)
    assert m['ponder_requests_finished_total{reason="abort"}'] >= 1
    assert m["ponder_kv_blocks_used"] == 0 and m["ponder_running_requests"] == 0


def _metrics(http) -> dict:
    out = {}
    for line in http.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# -- logprobs, echo, token ids ---------------------------------------------------------------

def test_completion_logprobs(client, model):
    r = client.completions.create(model=model, prompt="the", max_tokens=5, logprobs=3, seed=4,
                                  extra_body={"ignore_eos": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    for tok, x, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert x <= 0 and 3 <= len(top) <= 4 and top[tok] == x
    assert lp.text_offset == sorted(lp.text_offset)


def test_chat_logprobs(client, model):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=4,
                                       logprobs=True, top_logprobs=2, seed=4, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    assert all(len(c.top_logprobs) == 2 and c.logprob <= 0 and c.bytes for c in content)
    assert bytes(b for c in content for b in c.bytes).decode("utf-8", "replace") == r.choices[0].message.content


def test_echo_scoring_matches_generation(http):
    """echo + logprobs + max_tokens 0 scores the prompt; the numbers are generation's own, bit for bit."""
    ask = {"max_tokens": 10, "seed": 21, "temperature": 1.0, "logprobs": 2, "ignore_eos": True}
    gen = http.post("/v1/completions", json={"prompt": "in the", **ask, "return_tokens_as_token_ids": True}).json()
    gen_lp = gen["choices"][0]["logprobs"]
    gen_ids = [int(t.split(":")[1]) for t in gen_lp["tokens"]]
    prompt_ids = http.post("/tokenize", json={"prompt": "in the"}).json()["tokens"]
    full = prompt_ids + gen_ids
    scored = http.post("/v1/completions", json={"prompt": full, "max_tokens": 0, "echo": True, "logprobs": 2,
                                                "return_tokens_as_token_ids": True}).json()
    lp = scored["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["tokens"] == [f"token_id:{t}" for t in full]
    assert lp["token_logprobs"][len(prompt_ids):] == gen_lp["token_logprobs"]  # exact float equality
    assert lp["top_logprobs"][len(prompt_ids):] == gen_lp["top_logprobs"]
    assert scored["choices"][0]["text"] == http.post("/detokenize", json={"tokens": full}).json()["prompt"]
    assert scored["choices"][0]["finish_reason"] == "length" and scored["usage"]["completion_tokens"] == 0
    # echo with generation: the prompt's entries, then the generated ones, in the same arrays
    both = http.post("/v1/completions", json={"prompt": "in the", "echo": True, **ask}).json()["choices"][0]
    assert both["text"] == "in the" + gen["choices"][0]["text"]
    assert both["logprobs"]["token_logprobs"] == lp["token_logprobs"]
    assert len(both["logprobs"]["tokens"]) == len(full)
    assert both["logprobs"]["text_offset"][len(prompt_ids)] == len("in the")


def test_token_id_prompts_and_batches_agree(http):
    text = "the cat in the hat"
    ids = http.post("/tokenize", json={"prompt": text}).json()["tokens"]
    body = {"max_tokens": 0, "echo": True, "logprobs": 3}
    as_text = http.post("/v1/completions", json={"prompt": text, **body}).json()["choices"][0]["logprobs"]
    as_ids = http.post("/v1/completions", json={"prompt": ids, **body}).json()["choices"][0]["logprobs"]
    batch = http.post("/v1/completions", json={"prompt": [[5, 6, 7], ids, ids[:3]], **body}).json()["choices"]
    strs = http.post("/v1/completions", json={"prompt": ["x y", text], **body}).json()["choices"]
    assert [c["index"] for c in batch] == [0, 1, 2]
    assert as_text == as_ids == batch[1]["logprobs"] == strs[1]["logprobs"]
    assert batch[2]["logprobs"]["token_logprobs"] == as_ids["token_logprobs"][:3]


def test_batch_generation_matches_single(client, model):
    prompts = ["the", "and the", "is an"]
    batch = client.completions.create(model=model, prompt=prompts, max_tokens=6, seed=8, n=2)
    assert [c.index for c in batch.choices] == list(range(6))
    for i, p in enumerate(prompts):
        alone = client.completions.create(model=model, prompt=p, max_tokens=6, seed=8, n=2)
        assert [c.text for c in alone.choices] == [batch.choices[2 * i + s].text for s in range(2)]


# -- tokenizer endpoints -----------------------------------------------------------------

def test_tokenizer_endpoints(http):
    info = http.get("/tokenizer_info").json()
    assert info["eos_token"] == "<|im_end|>" and info["model_max_length"] == 256
    r = http.post("/tokenize", json={"prompt": "in the <|im_end|>", "add_special_tokens": False}).json()
    assert r["count"] == len(r["tokens"]) and r["tokens"][-1] == 2
    assert http.post("/detokenize", json={"tokens": r["tokens"]}).json()["prompt"] == "in the <|im_end|>"
    chat = http.post("/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["tokens"][0] == 1  # <|im_start|>
    _error(http.post("/detokenize", json={"tokens": [10**6]}), 400, "tokens")
    _error(http.post("/tokenize", json={"prompt": 5}), 400, "prompt")


# -- fields: honoured, ignored, refused ------------------------------------------------------

def test_ignored_fields_are_accepted(http):
    r = http.post("/v1/chat/completions", json={
        "messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [
            {"type": "text", "text": "hi"}]}],
        "max_completion_tokens": 2, "user": "u1", "metadata": {"a": "b"}, "store": False, "service_tier": "auto",
        "reasoning_effort": "low", "parallel_tool_calls": True, "presence_penalty": 0, "frequency_penalty": 0.0,
        "logit_bias": {}, "response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "seed": 1})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("field,value", [
    ("presence_penalty", 0.5), ("frequency_penalty", -1), ("logit_bias", {"5": 10}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("response_format", {"type": "json_object"}),
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]), ("tool_choice", "required"),
    ("no_such_field", 1),
])
def test_result_changing_fields_are_refused(http, field, value):
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], field: value})
    assert field in _error(r, 400, field)["message"]


@pytest.mark.parametrize("body,status,param", [
    ({"prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"prompt": "x", "n": 65}, 400, "n"),
    ({"prompt": "x", "n": True}, 400, "n"),
    ({"prompt": "x", "logprobs": 21}, 400, "logprobs"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"prompt": "x", "seed": -1}, 400, "seed"),
    ({"prompt": "x", "stop": 5}, 400, "stop"),
    ({"prompt": "x", "suffix": "y"}, 400, "suffix"),
    ({"prompt": {"a": 1}}, 400, "prompt"),
    ({"prompt": [1, "a"]}, 400, "prompt"),
    ({"prompt": [[1, 2], []]}, 400, "prompt"),
    ({"prompt": [999999]}, 400, "prompt"),
    ({}, 400, "prompt"),
    ({"prompt": "x", "model": "gpt-4o"}, 404, "model"),
    ({"prompt": "the " * 300}, 413, None),
    ({"prompt": list(range(5, 261))}, 413, None),
    ({"prompt": "x", "max_tokens": 3, "max_completion_tokens": 4}, 400, "max_completion_tokens"),
])
def test_bad_completion_requests(http, body, status, param):
    _error(http.post("/v1/completions", json=body), status, param)


def test_bad_bodies(http, client):
    _error(http.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"}), 400)
    _error(http.post("/v1/completions", content=b"[1, 2]"), 400)
    _error(http.post("/v1/completions", content=b"\xff\xfe"), 400)
    _error(http.post("/v1/chat/completions", json={"messages": "hi"}), 400, "messages")
    _error(http.post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]}), 400,
           "messages[0].role")
    _error(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                   "top_logprobs": 2}), 400, "top_logprobs")
    _error(http.get("/v1/nothing"), 404)
    _error(http.get("/v1/completions"), 405)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="x" if False else client.models.list().data[0].id, prompt="x", n=1000)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-5", prompt="x")
    assert http.get("/health").status_code == 200  # the engine thread lives on


def test_stop_reason(http):
    """vLLM's stop_reason says which stop string or stop token ended a sample (None: EOS or length)."""
    found = False
    for seed in range(40):
        body = {"prompt": "the cat", "max_tokens": 30, "seed": seed, "stop": ["e", "zz"], "temperature": 1.0}
        c = http.post("/v1/completions", json=body).json()["choices"][0]
        assert "stop_reason" in c
        if c["finish_reason"] == "stop" and c["stop_reason"] is not None:
            assert c["stop_reason"] == "e" and "e" not in c["text"]
            s = [json.loads(line[6:]) for line in http.post("/v1/completions", json={**body, "stream": True}).text
                 .splitlines() if line.startswith("data: {")]
            assert s[-1]["choices"][0]["stop_reason"] == "e"
            found = True
            break
    assert found
    ids = http.post("/v1/completions", json={"prompt": "the", "max_tokens": 20, "seed": 1, "logprobs": 0,
                                             "return_tokens_as_token_ids": True}).json()["choices"][0]
    third = int(ids["logprobs"]["tokens"][2].split(":")[1])
    c = http.post("/v1/completions", json={"prompt": "the", "max_tokens": 20, "seed": 1,
                                           "stop_token_ids": [third]}).json()["choices"][0]
    assert c["finish_reason"] == "stop" and c["stop_reason"] == third


def test_openai_backend_reads_the_server(server):
    """The strategies' OpenAIBackend parses this server's fingerprint, token ids and usage."""
    backend_mod = pytest.importorskip("ponder.strategies.openai_backend")
    from ponder.engine.sampling_params import SamplingParams

    b = backend_mod.OpenAIBackend(server.url + "/v1", api_key=KEY)
    assert len(b.model_info()["sha256"]) == 64
    [g] = b.generate([[5, 6, 7]], SamplingParams(max_tokens=5, seed=3, n=2, temperature=1.0))
    assert len(g.samples) == 2 and all(len(s.token_ids) <= 5 for s in g.samples)
    assert b.score([5, 6, 7, 8], 1) == [x for x in b.score([5, 6, 7, 8], 1)]


def test_stream_logprobs_equal_plain(http):
    body = {"prompt": "and the cat", "max_tokens": 12, "seed": 6, "n": 2, "logprobs": 2, "temperature": 1.0,
            "stop": ["at"]}
    plain = http.post("/v1/completions", json=body).json()["choices"]
    got = {0: {"tokens": [], "token_logprobs": [], "top_logprobs": []}, 1: {"tokens": [], "token_logprobs": [],
                                                                           "top_logprobs": []}}
    for line in http.post("/v1/completions", json={**body, "stream": True}).text.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:])["choices"]:
                for k in got[c["index"]]:
                    got[c["index"]][k] += (c["logprobs"] or {}).get(k, [])
    for c in plain:
        for k in got[c["index"]]:
            assert got[c["index"]][k] == c["logprobs"][k]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "seed": 2, "logprobs": True,
            "top_logprobs": 3, "n": 2}
    plain = http.post("/v1/chat/completions", json=chat).json()["choices"]
    streamed = {0: [], 1: []}
    for line in http.post("/v1/chat/completions", json={**chat, "stream": True}).text.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:])["choices"]:
                streamed[c["index"]] += (c["logprobs"] or {}).get("content") or []
    for c in plain:
        assert streamed[c["index"]] == c["logprobs"]["content"]


# -- the remote backend's errors and key ---------------------------------------------

def test_openai_backend_reports_a_wrong_key_with_the_servers_message(server):
    from ponder.errors import PonderError
    from ponder.strategies.openai_backend import OpenAIBackend

    with pytest.raises(PonderError) as e:
        OpenAIBackend(server.url + "/v1", api_key="not-the-key-123")
    msg = str(e.value)
    assert "401" in msg and "invalid or missing API key" in msg and "not-the-key-123" not in msg
    named = OpenAIBackend(server.url + "/v1", api_key="not-the-key-123", model="m")  # no /models call
    for call in (lambda: named.encode_chat([{"role": "user", "content": "hi"}]), lambda: named.decode([5]),
                 lambda: named.score([5, 6], 1)):
        with pytest.raises(PonderError) as e:
            call()
        assert "401" in str(e.value) and "invalid or missing API key" in str(e.value)


def test_openai_backend_takes_the_key_from_the_environment(server, monkeypatch):
    from ponder.strategies.openai_backend import OpenAIBackend

    for var in ("PONDER_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv("PONDER_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.setenv(var, KEY)
        assert OpenAIBackend(server.url + "/v1").model
    monkeypatch.setenv("PONDER_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "some-other-service-key")  # PONDER_API_KEY wins
    assert OpenAIBackend(server.url + "/v1").model


def test_openai_backend_redacts_credentials_in_the_url(server, monkeypatch):
    from ponder.errors import PonderError
    from ponder.strategies.openai_backend import OpenAIBackend

    monkeypatch.delenv("PONDER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    host = server.url.split("//", 1)[1]
    for url in (f"http://alice:pa55word-x@{host}/v1",  # the server refuses basic auth: 401
                "http://alice:pa55word-x@127.0.0.1:9/v1",  # nothing listens: cannot reach
                f"http://tok-abcdef-999@{host}/v1"):
        with pytest.raises(PonderError) as e:
            OpenAIBackend(url, api_key="k-secret-77")
        msg = str(e.value)
        assert "***@" in msg and "pa55word-x" not in msg and "tok-abcdef-999" not in msg, msg
        assert "k-secret-77" not in msg


def test_broken_http_framing_is_answered_without_a_traceback(server, tmp_path_factory):
    """A chunked body that breaks mid-way gets uvicorn's 400; the app's own answer (401 here) is dropped quietly."""
    import socket

    before = open(server.log_path).read().count("Traceback")
    for raw in (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"):
        with socket.create_connection((server.host, server.port), timeout=30) as s:
            s.sendall(raw)
            assert s.recv(100).startswith(b"HTTP/1.1 4")
    time.sleep(0.5)
    assert open(server.log_path).read().count("Traceback") == before
    assert httpx.get(server.url + "/health").status_code == 200


def test_ponder_tools_extension(http, model):
    """ponder_tools (not OpenAI's `tools`): an unknown tool is a 400 naming the field; with calc the
    request runs, plain and streamed, to the same text."""
    base = {"model": model, "prompt": "12 * 7 =", "max_tokens": 12, "temperature": 1.0, "seed": 5, "n": 3}
    err = _error(http.post("/v1/completions", json={**base, "ponder_tools": ["calculator"]}), 400, "ponder_tools")
    assert "unknown tool 'calculator'" in err["message"]
    _error(http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}],
                                                   "ponder_tools": "calc"}), 400, "ponder_tools")
    r = http.post("/v1/completions", json={**base, "ponder_tools": ["calc", "python"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert all("ponder_tools" in c for c in body["choices"]) and "tool_calls" in body["usage"]
    lines = http.post("/v1/completions", json={**base, "ponder_tools": ["calc", "python"], "stream": True}).text
    texts = ["", "", ""]
    for line in lines.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:])["choices"]:
                texts[c["index"]] += c["text"]
    assert texts == [c["text"] for c in body["choices"]]
