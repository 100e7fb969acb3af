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

