"""Replay audit: export a generation as a transcript, and verify one token by token.

A transcript names the model by file hash and holds the prompt, the parameters
(seed included) and every sample's tokens and logprobs.  Verifying runs the
transcript's tokens through the model once (teacher forcing: prefill gives the
same bits as decoding) and checks at every position that the sampler, keyed by
(seed, sample index, position), draws the recorded token with the recorded
logprob, bit for bit.

With tools, a transcript also names the tools and records each sample's splices
(the span of forced tokens) and calls (call, result, span).  Verifying re-runs the
splice rule (engine/tool_calls.py) on the recorded tokens: each splice must follow
a trigger, each call must be the one the text before its trigger makes, each tool
is run again and its output must equal the recorded one, and the forced tokens
must be the splice's text encoded.  The sampler is not checked on forced tokens
(they were not drawn); the model still computes them, so every drawn token after
them is checked as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ponder.engine import sampler
from ponder.engine.finish import cut_at_stop, round_stop
from ponder.engine.sampling_params import SamplingParams
from ponder.engine.tool_calls import MAX_CALLS, call_text, find_call, open_line, run_tool
from ponder.errors import PonderError

FORMAT = "ponder-transcript/1"


def make_transcript(engine, result) -> dict:
    info = engine.info()
    model = engine.model
    return {
        "format": FORMAT,
        "ponder_version": info.ponder_version,
        "kernel_version": info.kernel_version,
        "activation_bits": info.activation_bits,
        "isa": info.isa,  # recorded for the audit: the bits do not depend on it
        "threads": info.threads,
        "model": {"name": model.name, "file": model.path.rsplit("/", 1)[-1], "sha256": model.sha256()},
        "prompt": result.prompt,
        "prompt_token_ids": result.prompt_token_ids,
        "params": result.params.to_dict(),
        "samples": [{"index": o.index, "token_ids": o.token_ids, "logprobs": o.logprobs,
                     "finish_reason": o.finish_reason, "text": o.text, **_tool_record(o)} for o in result.outputs],
        **({"tools": list(result.tools)} if result.tools else {}),
    }


def _tool_record(o) -> dict:
    if o.tool_spans is None:
        return {}
    return {"tool_spans": [list(s) for s in o.tool_spans], "tool_calls": o.tool_calls}


def save(transcript: dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(transcript, f, ensure_ascii=False, indent=1)


def load(path: str) -> dict:
    try:
        with open(path) as f:
            t = json.load(f)
    except FileNotFoundError:
        raise PonderError(f"no such transcript: {path}") from None
    except json.JSONDecodeError as e:
        raise PonderError(f"{path} is not JSON: {e}") from None
    if not isinstance(t, dict) or t.get("format") != FORMAT:
        raise PonderError(f"{path} is not a ponder transcript (expected format {FORMAT!r})")
    return t


@dataclass
class Divergence:
    sample: int
    position: int  # index in prompt + output
    output_index: int  # index in the sample's output
    recorded_token: int
    recorded_logprob: float | None
    replayed_token: int
    replayed_logprob_of_recorded: float
    trace: list[dict] = field(default_factory=list)  # positions up to and including the divergence


@dataclass
class ToolMismatch:
    sample: int
    output_index: int  # the first forced token of the splice
    why: str


@dataclass
class VerifyReport:
    verified: bool
    tokens_checked: int
    model_matches: bool
    divergence: Divergence | None = None
    tool_mismatch: ToolMismatch | None = None
    tool_calls_checked: int = 0

    def summary(self) -> str:
        if not self.model_matches:
            return ("NOT VERIFIED: the transcript was made with a different model file (sha256 differs) "
                    "or activation precision")
        if self.tool_mismatch is not None:
            m = self.tool_mismatch
            return f"TOOL SPLICE DIFFERS at sample {m.sample}, output token {m.output_index}: {m.why}"
        if self.verified:
            if self.tool_calls_checked:
                return (f"verified: {self.tokens_checked} tokens replayed bit for bit, "
                        f"{self.tool_calls_checked} tool calls re-run with the same results")
            return f"verified: {self.tokens_checked} tokens replayed bit for bit"
        d = self.divergence
        return (f"DIVERGED at sample {d.sample}, output token {d.output_index} (position {d.position}): "
                f"transcript has {d.recorded_token} (logprob {d.recorded_logprob}), replay draws "
                f"{d.replayed_token}; the model gives the recorded token logprob {d.replayed_logprob_of_recorded}")


def verify(engine, transcript: dict, tools=None) -> VerifyReport:
    # the same weights, run with the same activation precision
    model_ok = (transcript["model"]["sha256"] == engine.model.sha256()
                and transcript.get("activation_bits", 16) == engine.info().activation_bits)
    if not model_ok:
        return VerifyReport(False, 0, False)
    params = SamplingParams.from_dict(transcript["params"])
    prompt = transcript["prompt_token_ids"]
    by_trigger = _tools_named(transcript.get("tools"), tools)
    checked = calls_checked = 0
    for sample in transcript["samples"]:
        tokens = prompt + sample["token_ids"]
        recorded_lp = sample.get("logprobs") or []
        trace, found = [], []
        forced = {a + j for a, n in sample.get("tool_spans") or [] for j in range(n)}
        mismatch = None
        if by_trigger is not None:
            mismatch, n_calls = _check_splices(engine, sample, by_trigger, params, prompt)
            calls_checked += n_calls

        def visit(i, logits, sample=sample, tokens=tokens, recorded_lp=recorded_lp, trace=trace, found=found,
                  forced=forced):
            if found or i + 1 >= len(tokens):
                return
            k = i + 1 - len(prompt)  # index in the output
            if k in forced:  # a tool's token: not drawn, nothing to check but what comes after it
                return
            drawn = sampler.sample_token(logits, params, params.first_sample + sample["index"], i + 1)
            want = tokens[i + 1]
            lp = sampler.token_logprob(logits, want)
            rec = recorded_lp[k] if k < len(recorded_lp) else None
            trace.append({"output_index": k, "token": want, "recorded_logprob": rec, "replayed_logprob": lp,
                          "drawn": drawn})
            if drawn != want or (rec is not None and lp != rec):
                found.append(Divergence(sample["index"], i + 1, k, want, rec, drawn, lp, list(trace)))

        engine.forward_rows(tokens, len(prompt) - 1, visit)
        checked += len(trace)
        if mismatch is not None and (not found or mismatch.output_index <= found[0].output_index):
            return VerifyReport(False, checked, True, tool_mismatch=mismatch, tool_calls_checked=calls_checked)
        if found:
            return VerifyReport(False, checked, True, found[0], tool_calls_checked=calls_checked)
    return VerifyReport(True, checked, True, tool_calls_checked=calls_checked)


def _tools_named(names, tools) -> dict | None:
    """trigger -> tool for the tools a transcript names (None when it names none)."""
    if not names:
        return None
    have = {t.name: t for t in tools or ()}
    missing = [n for n in names if n not in have]
    if missing:
        raise PonderError(f"the transcript's samples call tools {', '.join(missing)}: verify needs them to re-run "
                          "the calls")
    return {have[n].trigger: have[n] for n in names}


def _check_splices(engine, sample: dict, by_trigger: dict, params, prompt) -> tuple[ToolMismatch | None, int]:
    """Re-run the splice rule on a sample's recorded tokens; the first mismatch, and how many calls were re-run."""
    decode = engine.tokenizer.decode
    out = sample["token_ids"]
    idx = sample["index"]
    calls = {c["at_token"]: c for c in sample.get("tool_calls") or []}
    stops = tuple(dict.fromkeys(tuple(params.stop) + tuple(by_trigger)))
    line, start, made = open_line(prompt), 0, 0  # calls read the prompt's open line too
    for at, n in sample.get("tool_spans") or []:
        kept = decode(out[start:at])
        found = None
        for trig in by_trigger:
            for j in range(len(trig), -1, -1):
                cand = kept + trig[j:]
                if (kept.endswith(trig[:j]) and round_stop(cand, params.stop, by_trigger) == ("tool", trig)
                        and len(cut_at_stop(cand, stops)[0]) == len(cand) - len(trig)):
                    found = (trig, trig[j:])
                    break
            if found:
                break
        if found is None:
            return ToolMismatch(idx, at, "these forced tokens do not follow a tool trigger"), made
        trig, rest = found
        tool = by_trigger[trig]
        call = find_call(tool, call_text(decode, line, out[:at], rest, trig)) if made < MAX_CALLS else None
        rec = calls.get(at)
        if (call is None) != (rec is None):
            why = ("the text before the trigger makes no call, but one is recorded" if call is None else
                   f"the text before the trigger calls {tool.name} ({call.source!r}), but no call is recorded")
            return ToolMismatch(idx, at, why), made
        output = ""
        if call is not None:
            made += 1
            if call.source != rec.get("source"):
                return ToolMismatch(idx, at, f"the recorded call is {rec.get('source')!r}, the text makes "
                                             f"{call.source!r}"), made
            output = rec.get("output", "")
            timed_out = (rec.get("error") or "").startswith("timed out after") and output == f" ({tool.name} error: "                 f"{rec['error']})"
            if not timed_out:  # a call that ran out of time cannot be re-checked; its text is the timeout's
                again = run_tool(tool, call)
                if again.output != output:
                    return ToolMismatch(idx, at, f"{tool.name}({call.source!r}) gives {again.output!r} when run "
                                                 f"again; the transcript has {output!r}"), made
        splice = rest + output
        want = engine.tokenizer.encode(splice, add_bos=False) if splice else []
        if out[at:at + n] != want:
            return ToolMismatch(idx, at, f"the forced tokens are not the splice {splice!r} encoded"), made
        start = at + n
    if sample.get("finish_reason") in ("stop", "length"):
        tail = decode(out[start:])
        hit = round_stop(tail, params.stop, by_trigger)
        if hit is not None and hit[0] == "tool":
            return ToolMismatch(idx, start, f"the text from here writes the trigger {hit[1]!r}, but no tool "
                                            "result is spliced after it"), made
    return None, made
