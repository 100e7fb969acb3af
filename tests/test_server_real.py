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



def test_real_model_ponder_tools(default_model_path, default_engine, tmp_path):
    """ponder_tools runs calc in the server's engine: plain and streamed, the same text as the Python API,
    with the calls, the tool tokens' spans and the tool text's characters marked."""
    import httpx

    from ponder import SamplingParams
    from ponder.tasks import Problem, messages
    from ponder.tools import exemplar_messages, get_tools

    msgs = messages(Problem(id="x", question="What is 12 * 7?", answer="84"), "direct", (), exemplar_messages(["calc"]))
    [local] = default_engine.generate(msgs, SamplingParams(temperature=0, max_tokens=24), get_tools("calc"))
    body = {"messages": msgs, "max_tokens": 24, "temperature": 0, "ponder_tools": ["calc"]}
    with ServerProcess(default_model_path, log_path=str(tmp_path / "serve.log")) as srv:
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            r = http.post("/v1/chat/completions", json=body).json()
            lines = [ln[6:] for ln in http.post("/v1/chat/completions", json={**body, "stream": True,
                                                "stream_options": {"include_usage": True}}).text.splitlines()
                     if ln.startswith("data: {")]
    import json

    choice = r["choices"][0]
    assert choice["message"]["content"] == local.text and "12 * 7 = 84" in local.text
    assert choice["ponder_tools"]["calls"] == local.outputs[0].tool_calls
    assert choice["ponder_tools"]["token_spans"] == [list(s) for s in local.outputs[0].tool_spans]
    assert r["usage"]["tool_calls"] == 1 and r["usage"]["tool_tokens"] == sum(local.outputs[0].tool_mask)
    chunks = [json.loads(ln) for ln in lines]
    text, tool_text = "", ""
    for c in chunks:
        for ch in c["choices"]:
            t = ch["delta"].get("content") or ""
            tool_text += "".join(t[a:b] for a, b in ch.get("ponder_tool_chars", []))
            text += t
    assert text == local.text and tool_text == "".join(c["output"] for c in local.outputs[0].tool_calls)
    assert chunks[-1]["usage"]["tool_calls"] == 1
