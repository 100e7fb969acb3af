"""The client-side tool loop (ToolBackend) through the real engine: forced tokens are marked, left out
of likelihoods and counted apart; results are deterministic alone, in a batch and per sample; tool
errors and timeouts are text for the model and lose no sample; and on the default model, calc gives
the exact answer."""

import pytest

from ponder import Engine
from ponder.strategies import EngineBackend, Judge, Options, derive_seed, make_strategy
from ponder.strategies.tool_loop import ToolBackend
from ponder.tasks import Problem, load_problems, messages
from ponder.tools import ToolCall, exemplar_messages, get_tools
from ponder.tools.python import PythonTool
from ponder.tools.sandbox import Limits

from marker_tool import Marker
from ponder.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    return EngineBackend(Engine.from_pretrained(str(tiny_llama[2])))


@pytest.fixture(scope="module")
def prompt(tiny):
    return tiny.encode_chat([{"role": "user", "content": "What is 2 + 2?"}])


PARAMS = SamplingParams(temperature=1.0, max_tokens=24, seed=11, n=4)


@pytest.fixture(scope="module")
def trigger(tiny, prompt):
    [g] = tiny.generate([prompt], PARAMS)
    text = g.samples[0].text
    return next(c for c in text[len(text) // 3:] if c.isprintable() and not c.isspace() and c not in "[]")


def test_forced_tokens_are_marked_and_counted_apart(tiny, prompt, trigger):
    tb = ToolBackend(tiny, [Marker(trigger)])
    before = tb.usage
    [g] = tb.generate([prompt], PARAMS)
    used = tb.usage - before
    assert used.tool_calls >= 1 and used.tool_tokens > 0
    assert sum(sum(s.tool_mask) for s in g.samples) == used.tool_tokens
    assert sum(len(s.tool_calls) for s in g.samples) == used.tool_calls
    for s in g.samples:
        assert len(s.tool_mask) == len(s.token_ids)
        assert len(s.logprobs) == s.tool_mask.count(False)  # likelihoods: the model's tokens only
        assert tiny.decode(s.token_ids) == s.text
        for c in s.tool_calls:  # each result sits right after its trigger, computed on the text before it
            n = int(c["source"])
            assert s.text[n:].startswith(trigger + c["output"])
        assert s.tool_mask.count(False) <= PARAMS.max_tokens  # the budget counts the model's tokens


def test_tool_loop_is_deterministic_alone_batched_and_per_sample(tiny, prompt, trigger):
    tb = ToolBackend(tiny, [Marker(trigger)])
    [a] = tb.generate([prompt], PARAMS)
    [b] = tb.generate([prompt], PARAMS)
    other = tiny.encode_chat([{"role": "user", "content": "Name a colour."}])
    _, c = tb.generate([other, prompt], PARAMS)
    ids = [s.token_ids for s in a.samples]
    assert [s.token_ids for s in b.samples] == ids and [s.token_ids for s in c.samples] == ids
    for i in range(PARAMS.n):  # sample i alone is sample i of the request
        [one] = tb.generate([prompt], SamplingParams(temperature=1.0, max_tokens=24, seed=11, n=1, first_sample=i))
        assert one.samples[0].token_ids == ids[i]


def test_until_the_first_trigger_a_sample_is_the_plain_sample(tiny, prompt, trigger):
    [plain] = tiny.generate([prompt], PARAMS)
    [tooled] = ToolBackend(tiny, [Marker(trigger)]).generate([prompt], PARAMS)
    for p, t in zip(plain.samples, tooled.samples):
        cut = p.text.find(trigger)
        if cut < 0:
            assert t.token_ids == p.token_ids and not t.tool_calls
        else:
            assert t.text[:cut + 1] == p.text[:cut + 1]


class Recorder(Marker):
    """Marker that keeps the text each call was read from."""

    def __init__(self, trigger):
        super().__init__(trigger)
        self.seen = []

    def find_call(self, text):
        self.seen.append(text)
        return super().find_call(text)


def test_a_call_is_read_from_the_whole_line_including_the_prompts_open_part(tiny, prompt, trigger):
    """smc and beam continue prompt + partial answer: an expression begun in the prompt's last line
    belongs to the call; a chat prompt ends its line, so nothing of it is read."""
    open_line = tiny.encode("so 7 * 6")
    [plain] = tiny.generate([prompt + open_line], PARAMS)
    text = plain.samples[0].text  # a character this prompt's samples write, as the trigger
    rec = Recorder(next(c for c in text[len(text) // 3:] if c.isprintable() and not c.isspace() and c not in "[]"))
    ToolBackend(tiny, [rec]).generate([prompt + open_line], PARAMS)
    assert rec.seen and all(t.startswith(tiny.decode(open_line)) for t in rec.seen)
    fresh = Recorder(trigger)
    [g] = ToolBackend(tiny, [fresh]).generate([prompt], PARAMS)
    firsts = [s.text[:s.text.find(trigger)] for s in g.samples if trigger in s.text]
    assert fresh.seen and set(fresh.seen) >= set(firsts) and not any("assistant" in t for t in fresh.seen)


class Stuck(PythonTool):
    """The python tool, handed a program that never ends, whatever the model wrote."""

    def __init__(self, trigger):
        super().__init__(Limits(wall_seconds=0.5, cpu_seconds=2))
        self.trigger = trigger

    def find_call(self, text):
        return ToolCall(self.name, "while True:\n    pass\n")


def test_tool_timeouts_and_errors_are_text_and_lose_no_sample(tiny, prompt, trigger):
    tb = ToolBackend(tiny, [Stuck(trigger)])
    [g] = tb.generate([prompt], SamplingParams(temperature=1.0, max_tokens=16, seed=11, n=2))
    assert len(g.samples) == 2
    calls = [c for s in g.samples for c in s.tool_calls]
    assert calls and all(not c["ok"] and c["error"] == "timed out" for c in calls)
    assert all("timed out after 0.5 s" in c["output"] for c in calls)


def test_every_strategy_takes_tools(tiny, trigger):
    from ponder.strategies import STRATEGIES

    problem = load_problems("arithmetic", difficulty=1, count=1)[0][0]
    tb = ToolBackend(tiny, [Marker(trigger)])
    prompt = tb.encode_chat(messages(problem))
    for name in STRATEGIES:
        before = tb.usage
        out = make_strategy(name, Options(samples=2, max_tokens=10, m=1, chunk=4, beam_width=1, expand=2, check_exemplars=0,
                                          max_steps=2, step_tokens=6, probe_tokens=3)).solve(
            tb, prompt, Judge(problem), derive_seed(0, problem.id))
        used = tb.usage - before
        assert out.attempts and used.generated_tokens > 0, name


def test_extraction_reads_the_tool_value_not_the_digits_after_it():
    p = Problem(id="t", question="What is 0.4 - 0.3?", answer="0.1")
    judge = Judge(p)
    call = {"tool": "calc", "source": "0.4 - 0.3", "output": " 0.1", "ok": True, "value": "0.1", "error": None}
    assert judge.check("0.4 - 0.3 = 0.16", [call]) == ("0.1", True)  # the model ran on after the value
    assert judge.check("0.4 - 0.3 = 0.16", None) == ("0.16", False)  # without tools: as written
    assert judge.check("0.4 - 0.3 = 0.1. The answer is 0.2.", [call])[0] == "0.2"  # a marked answer wins
    err = {"tool": "calc", "source": "2^99999", "output": " (calc error: exponent larger than 4096)", "ok": False,
           "value": None, "error": "exponent larger than 4096"}
    assert judge.check("So 0.1 or 2^99999 = (calc error: exponent larger than 4096)", [err])[0] != "4096"
    code = {"tool": "python", "source": "print(3 * 4)\n", "output": "\n```output\n12\n```\n", "ok": True, "value": "12"}
    assert judge.check("```python\nprint(3 * 4)\n```\n```output\n12\n```\n", [code]) == ("12", False)


@pytest.mark.real_model
def test_calc_on_the_default_model(default_engine):
    """Greedy with calc's exemplars: the model writes the expression and calc gives the exact value."""
    backend = ToolBackend(EngineBackend(default_engine), get_tools("calc"))
    p = Problem(id="x", question="What is 37 × 48?", answer="1776")
    prompt = backend.encode_chat(messages(p, "direct", (), exemplar_messages(["calc"])))
    out = make_strategy("greedy", Options(max_tokens=32)).solve(backend, prompt, Judge(p), 0)
    a = out.attempts[0]
    assert a.info["tool_calls"] and a.info["tool_calls"][0]["source"] == "37 × 48"
    assert "= 1776" in a.text and a.correct
    assert a.info["tool_tokens"] >= 1


def test_run_with_tools_shots_and_verifier_on_a_tiny_model(tiny_llama, tmp_path, capsys):
    import json

    from ponder.cli.main import main

    store = str(tmp_path / "runs.sqlite")
    base = ["run", "-m", str(tiny_llama[2]), "--problems", "2", "--max-tokens", "8", "--store", store, "--no-progress"]
    assert main(base + ["--strategy", "majority", "--samples", "2", "--tools", "calc,python",
                        "--no-tool-exemplars"]) == 0  # the tiny model's context (256) is too small for them
    assert main(base + ["--suite", "numbers", "--shots", "1", "--shot-match", "category", "--strategy", "best-of-n",
                        "--select", "verifier", "--samples", "4", "--batch", "2"]) == 0
    capsys.readouterr()
    assert main(["runs", "--store", store, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert {r["strategy"] for r in runs} == {"majority", "best-of-n"} and all(r["done"] == 2 for r in runs)
    from ponder.store import RunStore

    s = RunStore(store)
    tooled = next(r for r in runs if r["strategy"] == "majority")
    assert s.run(tooled["id"])["config"]["tools"] == ["calc", "python"]
    verified = next(r for r in runs if r["strategy"] == "best-of-n")
    assert s.run(verified["id"])["config"]["shot_match"] == "category"
    for p in s.problems(verified["id"]):
        assert p["info"]["samples_drawn"] in (2, 4) and "tokens_saved_estimate" in p["info"]


def test_bad_tool_input_is_one_line(tmp_path, capsys):
    from ponder.cli.main import main

    store = ["--store", str(tmp_path / "r.sqlite")]
    assert main(["run", "--tools", "calc,calculator", *store]) == 2
    assert "unknown tool 'calculator'; valid: calc, python" in capsys.readouterr().err
    assert main(["run", "--strategy", "best-of-n", "--select", "verifier", *store]) == 2
    assert "--select verifier needs a suite whose problems have a solution verifier" in capsys.readouterr().err
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"question": "a", "answer": 1}\n')
    assert main(["run", "--suite", str(bad), "--shots", "2", *store]) == 2
    assert "--shots needs a procedural suite" in capsys.readouterr().err


def test_remote_backend_runs_the_same_client_side_tool_loop(tiny_llama, tiny, prompt, trigger):
    """Against any OpenAI-compatible server the loop runs client-side; on ponder's server it gives the
    local result, where the engine runs the tools itself, token for token (forced tokens, calls and all)."""
    from ponder.server.process import ServerProcess
    from ponder.strategies.openai_backend import OpenAIBackend

    local_backend = tiny.with_tools([Marker(trigger)])
    assert not isinstance(local_backend, ToolBackend)  # the local engine runs tools in its decoding loop
    [local] = local_backend.generate([prompt], PARAMS)
    with ServerProcess(str(tiny_llama[2])) as srv:
        remote_backend = OpenAIBackend(srv.url + "/v1").with_tools([Marker(trigger)])
        assert isinstance(remote_backend, ToolBackend)
        [remote] = remote_backend.generate([prompt], PARAMS)
    assert [s.token_ids for s in remote.samples] == [s.token_ids for s in local.samples]
    assert [s.tool_mask for s in remote.samples] == [s.tool_mask for s in local.samples]
    assert [[c["output"] for c in s.tool_calls] for s in remote.samples] == \
           [[c["output"] for c in s.tool_calls] for s in local.samples]
    assert remote_backend.usage.tool_calls == sum(len(s.tool_calls) for s in local.samples)


def test_a_character_split_between_the_prompt_and_the_answer_is_read_whole(tiny, prompt):
    """A strategy growing an answer in steps may cut a character in two ("÷" is two byte tokens): the
    call reads the prompt's open line and the answer decoded together, not each alone."""
    from ponder.engine.tool_calls import call_text, open_line

    ids = tiny.encode("so 12 ÷ 4")
    k = next(k for k in range(1, len(ids)) if tiny.decode(ids[:k]).endswith("\ufffd"))
    line = open_line(prompt + ids[:k])
    assert call_text(tiny.decode, line, ids[k:], " =", " =") == "so 12 ÷ 4"
    assert call_text(tiny.decode, line, ids[k:] + tiny.encode(" ="), "", " =") == "so 12 ÷ 4"
    # a chat prompt ends its line: nothing of it is read
    assert call_text(tiny.decode, open_line(prompt), ids, " =", " =") == "so 12 ÷ 4"
    assert get_tools("calc")[0].find_call(call_text(tiny.decode, line, ids[k:], " =", " =")) is not None
