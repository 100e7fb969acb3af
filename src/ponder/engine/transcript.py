"""Replay audit: export a generation as a transcript, and verify one token by token.

A transcript names the model by file hash and holds the prompt, the parameters
(seed included) and every sample's tokens and logprobs.  Verifying runs the
transcript's tokens through the model once (teacher forcing: prefill gives the
same bits as decoding) and checks at every position that the sampler, keyed by
(seed, sample index, position), draws the recorded token with the recorded
logprob, bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ponder.engine import sampler
from ponder.engine.sampling_params import SamplingParams
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
                     "finish_reason": o.finish_reason, "text": o.text} for o in result.outputs],
    }


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
class VerifyReport:
    verified: bool
    tokens_checked: int
    model_matches: bool
    divergence: Divergence | None = None

    def summary(self) -> str:
        if not self.model_matches:
            return ("NOT VERIFIED: the transcript was made with a different model file (sha256 differs) "
                    "or activation precision")
        if self.verified:
            return f"verified: {self.tokens_checked} tokens replayed bit for bit"
        d = self.divergence
        return (f"DIVERGED at sample {d.sample}, output token {d.output_index} (position {d.position}): "
                f"transcript has {d.recorded_token} (logprob {d.recorded_logprob}), replay draws "
                f"{d.replayed_token}; the model gives the recorded token logprob {d.replayed_logprob_of_recorded}")


def verify(engine, transcript: dict) -> VerifyReport:
    # the same weights, run with the same activation precision
    model_ok = (transcript["model"]["sha256"] == engine.model.sha256()
                and transcript.get("activation_bits", 16) == engine.info().activation_bits)
    if not model_ok:
        return VerifyReport(False, 0, False)
    params = SamplingParams.from_dict(transcript["params"])
    prompt = transcript["prompt_token_ids"]
    checked = 0
    for sample in transcript["samples"]:
        tokens = prompt + sample["token_ids"]
        recorded_lp = sample.get("logprobs") or []
        trace, found = [], []

        def visit(i, logits, sample=sample, tokens=tokens, recorded_lp=recorded_lp, trace=trace, found=found):
            if found or i + 1 >= len(tokens):
                return
            k = i + 1 - len(prompt)  # index in the output
            lp = sampler.log_softmax(logits)
            drawn = sampler.sample_token(logits, params, params.first_sample + sample["index"], i + 1)
            want = tokens[i + 1]
            rec = recorded_lp[k] if k < len(recorded_lp) else None
            trace.append({"output_index": k, "token": want, "recorded_logprob": rec, "replayed_logprob": float(lp[want]),
                          "drawn": drawn})
            if drawn != want or (rec is not None and float(lp[want]) != rec):
                found.append(Divergence(sample["index"], i + 1, k, want, rec, drawn, float(lp[want]), list(trace)))

        engine.forward_rows(tokens, len(prompt) - 1, visit)
        checked += len(trace)
        if found:
            return VerifyReport(False, checked, True, found[0])
    return VerifyReport(True, checked, True)
