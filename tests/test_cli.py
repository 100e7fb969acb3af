"""The command line, run in-process."""

import json

from ponder.cli.main import main


def test_generate_json(tiny_llama, capsys):
    assert main(["generate", "the cat", "-m", str(tiny_llama[2]), "--max-tokens", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt_token_ids"] and len(out["token_ids"]) <= 5
    assert out["finish_reason"] in ("stop", "length") and isinstance(out["text"], str)


def test_generate_chat_with_seed_is_reproducible(tiny_llama, capsys):
    args = ["generate", "hi", "--chat", "-m", str(tiny_llama[3]), "--temperature", "0.8", "--seed", "3",
            "--max-tokens", "6", "--json"]
    main(args)
    first = json.loads(capsys.readouterr().out)
    main(args)
    assert json.loads(capsys.readouterr().out)["token_ids"] == first["token_ids"]
    assert first["prompt_token_ids"][0] == 1  # the chat template ran


def test_generate_streams_the_same_text_as_json(tiny_llama, capsys):
    """Plain output is streamed as it becomes final: the same text as --json, also cut at a stop string."""
    base = ["generate", "the cat", "-m", str(tiny_llama[2]), "--max-tokens", "12", "--temperature", "0.9",
            "--seed", "5"]
    assert main(base + ["--json"]) == 0
    text = json.loads(capsys.readouterr().out)["text"]
    assert main(base) == 0
    assert capsys.readouterr().out == text + "\n"
    stop = next(ch for ch in text[1:] if ch.isascii() and ch.isalnum())  # this seed's text has some
    assert main(base + ["--stop", stop, "--json"]) == 0
    cut = json.loads(capsys.readouterr().out)["text"]
    assert main(base + ["--stop", stop]) == 0
    assert capsys.readouterr().out == cut + "\n" and stop not in cut and len(cut) < len(text)


def test_models_lists_default(capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


def test_unknown_model_is_a_clean_error(capsys):
    assert main(["generate", "x", "-m", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err
