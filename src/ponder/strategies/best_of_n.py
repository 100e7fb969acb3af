"""best-of-n: N samples, one chosen by a selector.

- oracle: the checker picks a correct sample if there is one (this is coverage, an upper bound);
- logprob: the highest mean token log-probability (the model's own confidence);
- weighted: a likelihood-weighted vote in the spirit of RPC (Zhou et al., 2025): identical
  reasoning paths are counted once, each path weighs exp(mean logprob), and the answer with
  the largest total weight wins;
- verifier: for suites with a solution verifier (no answer key): samples are drawn in rounds of
  --batch from the same sample stream as one request of N, and the first verified solution is
  chosen; the rounds not drawn are the tokens saved (reported as an estimate: the mean tokens of
  the drawn samples times the samples not drawn; a best-of-n --select oracle run of the same seed
  draws exactly the samples left out, for the exact figure).
"""

from __future__ import annotations

import math

from ponder.errors import InvalidParameterError
from ponder.strategies.base import Outcome, Strategy
from ponder.strategies.voting import weighted_vote

SELECTORS = ("oracle", "logprob", "weighted", "verifier")


class BestOfN(Strategy):
    name = "best-of-n"
    describe = "N samples, pick by --select oracle | logprob | weighted (RPC-style vote) | verifier (stops at the first verified)"

    def __init__(self, options=None):
        super().__init__(options)
        if self.opt.select not in SELECTORS:
            raise InvalidParameterError(f"unknown selector {self.opt.select!r}; valid: {', '.join(SELECTORS)}", "select")

    def solve(self, backend, prompt_ids, judge, seed):
        if self.opt.select == "verifier":
            return self._until_verified(backend, prompt_ids, judge, seed)
        atts = self._samples(backend, prompt_ids, judge, self.opt.samples, seed)
        sel = self.opt.select
        if sel == "oracle":
            chosen = next((a for a in atts if a.correct), atts[0])
        elif sel == "logprob":
            chosen = max(atts, key=lambda a: (a.mean_logprob, -a.index))
        else:
            seen, keys, weights = set(), [], []
            for a in atts:
                path = tuple(a.token_ids)
                keys.append(judge.key(a.answer) if path not in seen else None)
                weights.append(math.exp(a.mean_logprob) if a.token_ids else 0.0)
                seen.add(path)
            best, totals = weighted_vote(keys, weights)
            chosen = next((a for a, k in zip(atts, keys) if best is not None and k == best), atts[0])
        chosen.selected = True
        return Outcome(chosen.answer, float(chosen.correct), atts, info={"select": sel})

    def _until_verified(self, backend, prompt_ids, judge, seed):
        if not judge.verifiable:
            raise InvalidParameterError("--select verifier needs a suite whose problems have a solution verifier "
                                        "(puzzles, numbers); elsewhere it would read the answer key", "select")
        n, batch = self.opt.samples, max(1, self.opt.batch)
        atts = []
        while len(atts) < n and not any(a.correct for a in atts):
            atts += self._samples(backend, prompt_ids, judge, min(batch, n - len(atts)), seed, start=len(atts))
        chosen = next((a for a in atts if a.correct), atts[0])
        chosen.selected = True
        drawn = sum(a.generated_tokens for a in atts)
        saved = round(drawn / len(atts) * (n - len(atts)), 1)
        return Outcome(chosen.answer, float(chosen.correct), atts,
                       info={"select": "verifier", "samples_drawn": len(atts), "tokens_saved_estimate": saved})
