"""Replay audit: transcripts verify untouched and name the first divergent token when edited."""

import copy
import json

import pytest

from ponder import Engine, SamplingParams
from ponder.cli.main import main
from ponder.loading.model_files import load_model


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return Engine(load_model(str(tiny_llama[2])))


@pytest.fixture(scope="module")
def transcript(engine):
    res = engine.generate("the cat is", SamplingParams(temperature=0.9, n=3, seed=21, max_tokens=12, ignore_eos=True))[0]
    return engine.transcript(res)


def test_untouched_transcript_verifies(engine, transcript):
    report = engine.verify(transcript)
    assert report.verified and report.model_matches
    assert report.tokens_checked == 3 * 12
    assert report.summary().startswith("verified")


def test_changed_token_is_named(engine, transcript):
    bad = copy.deepcopy(transcript)
    tok = bad["samples"][1]["token_ids"]
    tok[5] = (tok[5] + 1) % 200
    report = engine.verify(bad)
    assert not report.verified
    d = report.divergence
    assert (d.sample, d.output_index) == (1, 5)
    assert d.replayed_token == transcript["samples"][1]["token_ids"][5]
    assert len(d.trace) == 6 and d.trace[-1]["output_index"] == 5
    assert "sample 1, output token 5" in report.summary()


def test_changed_logprob_is_named(engine, transcript):
    bad = copy.deepcopy(transcript)
    bad["samples"][0]["logprobs"][3] += 1e-9
    report = engine.verify(bad)
    assert not report.verified and report.divergence.output_index == 3


def test_other_model_is_reported(engine, transcript):
    bad = copy.deepcopy(transcript)
    bad["model"]["sha256"] = "0" * 64
    report = engine.verify(bad)
    assert not report.verified and not report.model_matches


def test_score_equals_generation_logprobs(engine):
    res = engine.generate("the hat", SamplingParams(temperature=0.7, seed=2, max_tokens=10, ignore_eos=True))[0]
    fresh = Engine(engine.model, prefix_cache=False)
    scored = fresh.score(res.prompt_token_ids + res.token_ids, start=len(res.prompt_token_ids))
    assert [s["token"] for s in scored] == res.token_ids
    assert [s["logprob"] for s in scored] == res.logprobs


def test_cli_generate_transcript_and_verify(tiny_llama, tmp_path, capsys):
    path = tmp_path / "t.json"
    assert main(["generate", "the", "-m", str(tiny_llama[2]), "--temperature", "1", "--seed", "4",
                 "--max-tokens", "6", "--transcript", str(path)]) == 0
    capsys.readouterr()
    assert main(["verify", str(path)]) == 0
    assert capsys.readouterr().out.startswith("verified")
    t = json.loads(path.read_text())
    t["samples"][0]["token_ids"][2] ^= 1
    path.write_text(json.dumps(t))
    assert main(["verify", str(path)]) == 1
    assert "output token 2" in capsys.readouterr().out


def test_cli_verify_rejects_non_transcripts(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_text("{}")
    assert main(["verify", str(p)]) == 2
    assert "not a ponder transcript" in capsys.readouterr().err
