"""Tools inside the engine's decoding loop (engine/tool_calls.py, engine/tool_runner.py) on the real
engine: a sample pauses at a trigger, its tool runs on the engine's pool, and the result is spliced as
forced tokens on top of its KV.  The tiny random model writes garbage, so the trigger is a character
it writes often (as in test_tool_loop.py)."""

import threading

import numpy as np
import pytest

from ponder import Engine
from ponder.engine.sampling_params import SamplingParams
from ponder.errors import InvalidParameterError
from ponder.strategies import EngineBackend
from ponder.strategies.tool_loop import ToolBackend
from ponder.tools import Tool, ToolCall, ToolResult, get_tools

from marker_tool import Marker


PARAMS = SamplingParams(temperature=1.0, max_tokens=24, seed=11, n=4)


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return Engine.from_pretrained(str(tiny_llama[2]))


@pytest.fixture(scope="module")
def prompt(engine):
    tok = engine.tokenizer
    return tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}]))


@pytest.fixture(scope="module")
def trigger(engine, prompt):
    [g] = engine.generate(prompt, PARAMS)
    text = g.outputs[0].text
    return next(c for c in text[len(text) // 3:] if c.isprintable() and not c.isspace() and c not in "[]")


def test_engine_side_tools_give_the_client_side_loops_tokens(engine, prompt, trigger):
    tools = [Marker(trigger)]
    [client] = ToolBackend(EngineBackend(engine), tools).generate([prompt], PARAMS)
    backend = EngineBackend(engine).with_tools(tools)
    [inside] = backend.generate([prompt], PARAMS)
    assert sum(len(s.tool_calls) for s in client.samples) >= 2
    for c, e in zip(client.samples, inside.samples):
        assert (e.token_ids, e.text, e.tool_mask, e.logprobs, e.finish_reason, e.generated, e.tool_calls) == \
               (c.token_ids, c.text, c.tool_mask, c.logprobs, c.finish_reason, c.generated, c.tool_calls)
    assert backend.usage.tool_calls == sum(len(s.tool_calls) for s in inside.samples)
    assert backend.usage.tool_tokens == sum(sum(s.tool_mask) for s in inside.samples)


def _kv(engine, seq, n):
    """The K and V of a sequence's first n positions, gathered from its blocks."""
    kv = engine._kv
    pos = np.arange(n)
    blocks = np.array(seq.block_table)[pos // kv.block_size]
    k = [kv.k[:, b, :, :, p % kv.block_size] for b, p in zip(blocks, pos)]  # (layers, heads, head_dim) each
    v = [kv.v[:, b, :, p % kv.block_size, :] for b, p in zip(blocks, pos)]
    return np.stack(k), np.stack(v)


def test_kv_after_a_splice_equals_the_same_tokens_prefilled_whole(tiny_llama, engine, prompt, trigger):
    params = SamplingParams(temperature=1.0, max_tokens=24, seed=11)
    rid = engine.add_request(prompt, params, [Marker(trigger)])
    seq = engine._requests[rid].samples[0]
    while not (seq.tools.spans and seq.num_computed > len(prompt) + seq.tools.spans[0][1]):
        assert not seq.finished, "the sample never called the tool"
        engine.step()
    n = seq.num_computed  # the forced tokens and one drawn after them are computed on top of the KV
    tokens = list(seq.tokens[:n])
    spliced = _kv(engine, seq, n)
    engine.run_until_done([rid])
    whole = Engine.from_pretrained(str(tiny_llama[2]), prefix_cache=False)
    wid = whole.add_request(tokens, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    wseq = whole._requests[wid].samples[0]
    while not wseq.output_ids:
        whole.step()
    k, v = _kv(whole, wseq, n)
    assert spliced[0].tobytes() == k.tobytes() and spliced[1].tobytes() == v.tobytes()


def _run(engine, prompts, params, tools):
    return engine.generate(prompts, params, tools)


def test_tools_are_deterministic_alone_batched_forked_warm_and_cold(tiny_llama, engine, prompt, trigger):
    tools = [Marker(trigger)]
    cold = Engine.from_pretrained(str(tiny_llama[2]))
    [a] = cold.generate(prompt, PARAMS, tools)  # cold: nothing cached
    [b] = cold.generate(prompt, PARAMS, tools)  # warm: the prompt and the samples' blocks are cached
    other = "Name a colour."
    _, c, _ = engine.generate([other, prompt, "Count to ten."], PARAMS, tools)  # batched, tool and plain
    want = [(o.token_ids, o.text, o.tool_mask) for o in a.outputs]
    assert sum(sum(m) for _, _, m in want) > 0
    for r in (b, c):
        assert [(o.token_ids, o.text, o.tool_mask) for o in r.outputs] == want
    for mode in ("lookup", "recycling"):  # speculative drafts (verified by the sampler) change nothing
        spec = Engine(engine.model, speculative=mode, speculative_tokens=8, speculative_max_batch=8)
        [d] = spec.generate(prompt, PARAMS, tools)
        assert [(o.token_ids, o.text, o.tool_mask) for o in d.outputs] == want, mode
    for i in range(PARAMS.n):  # sample i alone is sample i of the forked request
        [one] = engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=24, seed=11, first_sample=i), tools)
        assert (one.outputs[0].token_ids, one.outputs[0].text) == want[i][:2]
    # a plain request next to tool requests is the plain request
    [plain] = engine.generate(other, PARAMS)
    rid_t = engine.add_request(prompt, PARAMS, tools)
    rid_p = engine.add_request(other, PARAMS)
    _, mixed = engine.run_until_done([rid_t, rid_p])
    assert [o.token_ids for o in mixed.outputs] == [o.token_ids for o in plain.outputs]
    assert mixed.outputs[0].tool_mask is None and "tool_tokens" not in mixed.usage


def test_streamed_events_mark_tool_tokens_and_rebuild_the_result(engine, prompt, trigger):
    rid = engine.add_request(prompt, PARAMS, [Marker(trigger)])
    seen = {i: [] for i in range(PARAMS.n)}
    while not engine.is_finished(rid):
        for ev in engine.step():
            seen[ev.sample_index].append((ev.token_id, ev.tool, ev.finish_reason))
    res = engine.pop_result(rid)
    for o in res.outputs:
        assert [t for t, _, _ in seen[o.index]] == o.token_ids
        assert [tool for _, tool, _ in seen[o.index]] == o.tool_mask
        assert seen[o.index][-1][2] == o.finish_reason
    assert res.usage["tool_tokens"] == sum(sum(o.tool_mask) for o in res.outputs) > 0
    assert res.usage["tool_calls"] == sum(len(o.tool_calls) for o in res.outputs)
    assert res.usage["completion_tokens"] == sum(o.tool_mask.count(False) for o in res.outputs)
    for o in res.outputs:  # the budget counts the model's tokens; each call's span is its forced tokens
        assert o.tool_mask.count(False) <= PARAMS.max_tokens
        for c in o.tool_calls:
            assert all(o.tool_mask[c["at_token"]:c["at_token"] + c["n_tokens"]])
            assert engine.tokenizer.decode(o.token_ids[c["at_token"]:c["at_token"] + c["n_tokens"]]).endswith(c["output"])


class Broken(Marker):
    name = "broken"

    def run(self, call):
        raise RuntimeError("the tool fell over")


class Slow(Marker):
    """Waits for the test to let it go (or for its time limit)."""

    name = "slow"

    def __init__(self, trigger, gate: threading.Event, time_limit: float):
        super().__init__(trigger)
        self.gate, self.time_limit = gate, time_limit

    def run(self, call):
        self.gate.wait(self.time_limit * 4)
        return super().run(call)


def test_a_tool_error_or_timeout_is_text_and_loses_no_sample(engine, prompt, trigger):
    with pytest.raises(InvalidParameterError) as e:
        engine.add_request(prompt, PARAMS, [object()])
    assert e.value.param == "tools"
    with pytest.raises(InvalidParameterError, match="unknown tool 'nope'"):
        get_tools("calc,nope")
    [r] = engine.generate(prompt, PARAMS, [Broken(trigger)])
    calls = [c for o in r.outputs for c in o.tool_calls]
    assert len(r.outputs) == 4 and calls
    assert all(not c["ok"] and c["output"] == " (broken error: RuntimeError: the tool fell over)" for c in calls)
    [t] = engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=12, seed=11, n=2),
                          [Slow(trigger, threading.Event(), 0.2)])
    calls = [c for o in t.outputs for c in o.tool_calls]
    assert len(t.outputs) == 2 and calls and all(c["error"] == "timed out after 0.2 s" for c in calls)


def test_a_slow_tool_does_not_hold_up_another_request(engine, prompt, trigger):
    gate = threading.Event()
    slow = engine.add_request(prompt, SamplingParams(temperature=1.0, max_tokens=24, seed=11), [Slow(trigger, gate, 60)])
    plain = engine.add_request("Count to ten.", SamplingParams(temperature=1.0, max_tokens=24, seed=3))
    seq = engine._requests[slow].samples[0]
    while not engine.is_finished(plain):
        engine.step()
    assert seq.tools.pause is not None and not engine.is_finished(slow)  # still waiting on its tool
    assert engine.stats().tool_sequences == 1
    gate.set()
    [s, p] = engine.run_until_done([slow, plain])
    assert engine.stats().tool_sequences == 0
    assert s.outputs[0].tool_calls[0]["ok"] and p.finish_reason in ("stop", "length")


def test_the_call_reads_the_text_before_its_trigger(engine, prompt, trigger):
    [r] = engine.generate(prompt, PARAMS, [Marker(trigger)])
    for o in r.outputs:
        for c in o.tool_calls:
            assert o.text[int(c["source"]):].startswith(trigger + c["output"])


def test_a_transcript_with_tool_calls_verifies_and_tampering_is_caught(engine, prompt, trigger):
    import copy

    tools = [Marker(trigger)]
    [r] = engine.generate(prompt, PARAMS, tools)
    t = engine.transcript(r)
    assert t["tools"] == ["marker"] and any(s["tool_calls"] for s in t["samples"])
    report = engine.verify(t, tools)
    assert report.verified, report.summary()
    assert report.tool_calls_checked == sum(len(o.tool_calls) for o in r.outputs)
    assert "tool calls re-run" in report.summary()
    i, s = next((i, s) for i, s in enumerate(t["samples"]) if s["tool_calls"])
    call = s["tool_calls"][0]
    at = call["at_token"]

    bad = copy.deepcopy(t)  # a tampered result
    bad["samples"][i]["tool_calls"][0]["output"] = "[999]"
    rep = engine.verify(bad, tools)
    assert not rep.verified and (rep.tool_mismatch.sample, rep.tool_mismatch.output_index) == (s["index"], at)
    assert f"sample {s['index']}, output token {at}" in rep.summary() and "[999]" in rep.summary()

    bad = copy.deepcopy(t)  # tampered forced tokens (the recorded result left as it was)
    bad["samples"][i]["token_ids"][at + call["n_tokens"] - 1] ^= 1
    rep = engine.verify(bad, tools)
    assert not rep.verified and rep.tool_mismatch.output_index == at
    assert "forced tokens are not the splice" in rep.summary()

    bad = copy.deepcopy(t)  # a call removed from the record
    bad["samples"][i]["tool_calls"] = bad["samples"][i]["tool_calls"][1:]
    assert not engine.verify(bad, tools).verified

    with pytest.raises(Exception, match="call tools marker"):
        engine.verify(t)  # the tools are needed to re-run the calls


@pytest.mark.real_model
def test_calc_in_the_engine_on_the_default_model(default_engine):
    """Greedy with calc's exemplars: the model writes "12 * 7 =", calc splices the exact value in the
    engine's loop, the client-side loop gives the same tokens, and the transcript verifies."""
    from ponder.tasks import Problem, messages
    from ponder.tools import exemplar_messages

    tools = get_tools("calc")
    msgs = messages(Problem(id="x", question="What is 12 * 7?", answer="84"), "direct", (), exemplar_messages(["calc"]))
    params = SamplingParams(temperature=0, max_tokens=24)
    [r] = default_engine.generate(msgs, params, tools)
    o = r.outputs[0]
    assert o.tool_calls and o.tool_calls[0]["source"] == "12 * 7" and o.tool_calls[0]["value"] == "84"
    assert "12 * 7 = 84" in o.text
    backend = EngineBackend(default_engine)
    prompt = backend.encode_chat(msgs)
    [client] = ToolBackend(backend, tools).generate([prompt], params)
    assert client.samples[0].token_ids == backend.with_tools(tools).generate([prompt], params)[0].samples[0].token_ids
    assert default_engine.verify(default_engine.transcript(r), tools).verified


class Sleeper(Tool):
    """The python tool, handed a program that sleeps (well under its time limit) and prints."""

    name = "python"

    def __init__(self, trigger):
        from ponder.tools.python import PythonTool
        from ponder.tools.sandbox import Limits

        self.trigger, self.inner = trigger, PythonTool(Limits(wall_seconds=20, cpu_seconds=5))
        self.time_limit = 30

    def find_call(self, text):  # the first trigger only (later ones see the first one's output)
        return None if "```output" in text else ToolCall(self.name, "import time\ntime.sleep(3)\nprint(6 * 7)\n")

    def run(self, call):
        return self.inner.run(call)


def test_a_sandboxed_program_runs_while_another_request_finishes(engine, prompt, trigger):
    slow = engine.add_request(prompt, SamplingParams(temperature=1.0, max_tokens=24, seed=11), [Sleeper(trigger)])
    plain = engine.add_request("Count to ten.", SamplingParams(temperature=1.0, max_tokens=8, seed=3))
    order = []
    while not engine.is_finished(slow):
        for ev in engine.step():
            if ev.tool and "tool" not in order:
                order.append("tool")
            if ev.request_id == plain and ev.finish_reason:
                order.append("plain")
    [s, _] = engine.run_until_done([slow, plain])
    assert order == ["plain", "tool"]  # the plain request ended while the program slept
    c = s.outputs[0].tool_calls[0]
    assert c["ok"] and c["value"] == "42" and c["output"] == "\n```output\n42\n```\n"


class Loud(Marker):
    """Its output holds the request's stop string: tool output never ends a sample."""

    name = "loud"

    def run(self, call):
        return ToolResult(call, f"[STOP {call.source}]", True, value=call.source)


@pytest.fixture(scope="module")
def bigram(engine, prompt):
    """Two characters the tiny model writes in a row: a trigger a token can run past, or end inside."""
    [g] = engine.generate(prompt, PARAMS)
    text = "".join(o.text for o in g.outputs)
    return next(text[k:k + 2] for k in range(len(text) - 1)
                if all(c.isprintable() and not c.isspace() and c not in "[]" for c in text[k:k + 2]))


@pytest.mark.parametrize("case", ["stop in tool output", "short budget", "two-character trigger", "two tools",
                                  "open prompt line", "context limit"])
def test_engine_side_equals_client_side_at_the_edges(engine, prompt, trigger, bigram, case):
    params = PARAMS
    tools = [Marker(trigger)]
    if case == "open prompt line":  # a call reads the prompt's unfinished last line too
        line = engine.tokenizer.encode("so 7 * 6", add_bos=False)
        prompt = prompt + line
        [plain] = engine.generate(prompt, PARAMS)
        text = plain.outputs[0].text  # a character this prompt's samples write, as the trigger
        tools = [Marker(next(c for c in text[len(text) // 3:] if c.isprintable() and not c.isspace()
                             and c not in "[]"))]
    elif case == "stop in tool output":
        tools, params = [Loud(trigger)], SamplingParams(temperature=1.0, max_tokens=24, seed=11, n=4, stop=["STOP"])
    elif case == "short budget":
        params = SamplingParams(temperature=1.0, max_tokens=6, seed=5, n=8)
    elif case == "context limit":  # splices run into the end of the context window: both paths cut them alike
        limit = engine.info().max_sequence
        prompt = prompt + prompt[-1:] * (limit - 16 - len(prompt))
    elif case == "two-character trigger":
        tools = [Marker(bigram)]
    else:
        other = next(c for c in "abcdefghijklmnopqrstuvwxyz" if c not in trigger)
        tools = [Marker(trigger), Loud(other)]
    [client] = ToolBackend(EngineBackend(engine), tools).generate([prompt], params)
    [inside] = EngineBackend(engine, tools).generate([prompt], params)
    for c, e in zip(client.samples, inside.samples):
        assert (e.token_ids, e.text, e.tool_mask, e.logprobs, e.finish_reason, e.generated, e.tool_calls) == \
               (c.token_ids, c.text, c.tool_mask, c.logprobs, c.finish_reason, c.generated, c.tool_calls)
        assert e.tool_mask.count(False) <= params.max_tokens
    if case == "open prompt line":
        calls = [c for s in inside.samples for c in s.tool_calls]
        assert calls and all(int(c["source"]) >= len("so 7 * 6") for c in calls)
    if case == "context limit":  # some sample was cut at the limit, inside or right after a splice
        limit = engine.info().max_sequence
        assert all(len(prompt) + len(s.token_ids) <= limit for s in inside.samples)
        assert any(len(prompt) + len(s.token_ids) == limit and s.tool_calls for s in inside.samples)
    if case == "stop in tool output":  # a sample went on after a tool wrote the stop string
        assert any(s.tool_calls and not s.text.endswith(s.tool_calls[-1]["output"]) for s in inside.samples)




def test_at_most_max_calls_per_sample(engine, prompt, trigger):
    from ponder.engine.tool_calls import MAX_CALLS

    class Every(Marker):  # the model's most common character: many triggers per sample, each answered briefly
        name = "every"

        def run(self, call):
            return ToolResult(call, "!", True)

    [g] = engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=200, seed=11, n=2))
    text = "".join(o.text for o in g.outputs)
    common = max((c for c in set(text) if not c.isspace() and c not in "[]0123456789"), key=text.count)
    [r] = engine.generate(prompt, SamplingParams(temperature=1.0, max_tokens=200, seed=11, n=4), [Every(common)])
    calls = [len(o.tool_calls) for o in r.outputs]
    assert max(calls) == MAX_CALLS  # the cap was reached, and held
    full = next(o for o in r.outputs if len(o.tool_calls) == MAX_CALLS)
    last = full.tool_calls[-1]
    after = engine.tokenizer.decode(full.token_ids[last["at_token"] + last["n_tokens"]:])
    assert common in after or full.finish_reason == "length"  # later triggers stay text, nothing spliced


def test_streamed_text_is_not_held_back_by_a_stop_string_in_tool_output(engine, prompt, trigger):
    """`ponder generate --tools` streams through cli/stream.py (engine/stream_text.SampleText, as the
    server does): a tool's output holding a stop string is written when it arrives, not at the end."""
    from ponder.cli.stream import stream

    params = SamplingParams(temperature=1.0, max_tokens=24, seed=11, stop=["STOP"])

    class Out:
        def __init__(self):
            self.pieces = []

        def write(self, s):
            self.pieces.append(s)

        def flush(self):
            pass

    out = Out()
    rid = engine.add_request(prompt, params, [Loud(trigger)])
    result = stream(engine, rid, params, out)
    calls = result.outputs[0].tool_calls
    assert calls, "the tiny model wrote no trigger"
    assert "".join(out.pieces) == result.text
    assert calls[0]["output"] in "".join(out.pieces[:-1])  # written while decoding, not by the last write


def test_sample_text_rebuilds_the_text_and_its_offsets_across_splices(engine, prompt, trigger):
    """engine/stream_text.SampleText, fed a result's tokens one by one, hands out exactly its text, marks
    each tool output's characters, and gives each token the offset where its text starts."""
    from ponder.engine.stream_text import SampleText

    [r] = engine.generate(prompt, PARAMS, [Marker(trigger)])
    for o in (o for o in r.outputs if o.tool_calls):
        st = SampleText(engine.tokenizer, PARAMS.stop)
        text, tool_text, offsets = "", "", []
        mask = o.tool_mask + [False]
        for k, (t, tool) in enumerate(zip(o.token_ids, o.tool_mask)):
            offsets.append(st.add(t, tool=tool))
            if not mask[k + 1]:  # a step ends here (a splice's tokens all arrive in one step)
                piece, spans = st.take()
                tool_text += "".join(piece[a:b] for a, b in spans)
                text += piece
        st.finish()
        text += st.take()[0]
        assert text == o.text
        assert tool_text == "".join(c["output"] for c in o.tool_calls)
        assert offsets == sorted(offsets)
        for a, b in o.tool_spans:  # a splice's first token starts right after the text before it
            assert offsets[a] == len(engine.tokenizer.decode(o.token_ids[:a]))
