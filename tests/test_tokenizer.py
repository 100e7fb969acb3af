"""Tokenizer and chat templates: agreement with llama.cpp, round trips, rendering."""

import json
import os

import pytest

from ponder.errors import InvalidParameterError
from ponder.loading.chat_template import ChatTemplate
from ponder.loading.model_files import load_model

DATA = os.path.join(os.path.dirname(__file__), "data")


def _cases(name):
    with open(os.path.join(DATA, name)) as f:
        return json.load(f)["cases"]


@pytest.mark.real_model
def test_default_tokenizer_matches_llama_cpp_on_corpus(default_model):
    tok = default_model.tokenizer
    for case in _cases("tokenizer_corpus.json"):
        assert tok.encode(case["text"]) == case["ids"], case["text"]


@pytest.mark.real_model
def test_default_tokenizer_round_trips(default_model):
    tok = default_model.tokenizer
    for case in _cases("tokenizer_corpus.json"):
        assert tok.decode(tok.encode(case["text"])) == case["text"]


@pytest.mark.real_model
def test_default_chat_template_matches_llama_cpp_prompt(default_model):
    ref = _cases("smollm2-135m-q4_1-greedy.json")[0]
    tok = default_model.tokenizer
    assert tok.apply_chat_template(ref["messages"]) == ref["prompt_text"]
    assert tok.encode(ref["prompt_text"]) == ref["prompt_token_ids"]
    assert tok.eos_ids == {2} and tok.bos_id == 1 and not tok.add_bos


def test_tiny_gguf_and_hf_tokenizers_agree(tiny_llama):
    a, b = load_model(str(tiny_llama[2])).tokenizer, load_model(tiny_llama[3]).tokenizer
    for text in ["the cat is in the hat", "1234 and 56", "  two  spaces\n", "<|im_start|>user\nhé<|im_end|>"]:
        assert a.encode(text) == b.encode(text)
        assert a.decode(a.encode(text)) == text
    assert a.encode("<|im_start|>") == [1]


def test_chat_template_renders_system_and_generation_prompt(tiny_llama):
    tok = load_model(str(tiny_llama[2])).tokenizer
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert tok.apply_chat_template(msgs) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert not tok.apply_chat_template(msgs, add_generation_prompt=False).endswith("assistant\n")


def test_chat_template_helpers_and_errors():
    t = ChatTemplate("{% if messages|length > 1 %}{{ raise_exception('one message only') }}{% endif %}"
                     "{{ messages[0] | tojson }}{{ bos_token }}", bos_token="<s>")
    assert t.render([{"role": "user", "content": "hé"}]) == '{"role": "user", "content": "hé"}<s>'
    with pytest.raises(InvalidParameterError, match="one message only"):
        t.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(InvalidParameterError, match="role"):
        t.render([{"content": "no role"}])
