"""greedy: one temperature-0 answer.  The baseline every other strategy has to beat."""

from __future__ import annotations

from ponder.strategies.base import Outcome, Strategy, attempt


class Greedy(Strategy):
    name = "greedy"
    describe = "one greedy (temperature 0) answer"

    def solve(self, backend, prompt_ids, judge, seed):
        [gen] = backend.generate([prompt_ids], self.opt.sampling(temperature=0.0, n=1, seed=seed))
        s = gen.samples[0]
        a = attempt(judge, 0, s.token_ids, s.text, s.logprobs, s.finish_reason, s.generated, **s.tool_info)
        a.selected = True
        return Outcome(a.answer, float(a.correct), [a])
