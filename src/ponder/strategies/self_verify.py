"""self-verify: code-based self-verification (Zhou et al., 2023, "Solving Challenging Math Word
Problems Using GPT-4 Code Interpreter with Code-based Self-Verification"), sized for small models.

N answers are sampled (with --tools calc they compute with calc).  Each distinct answer is then
checked once: the model is asked, greedily, to check the proposed answer with one calculation
(the check exemplars show a recomputation that can disagree).  An answer is confirmed when the
check's value (its last tool result, else its last number) equals it.  Confirmed answers' votes
count 1, unconfirmed ones count --unconfirmed-weight (0.25): the weighted vote picks the answer.
Checks cost tokens; they are counted with the rest (one greedy check per distinct answer).
"""

from __future__ import annotations

from ponder.strategies.base import Outcome, Strategy, attempt
from ponder.strategies.voting import weighted_vote
from ponder.tools.exemplars import check_messages


class SelfVerify(Strategy):
    name = "self-verify"
    describe = "N answers, each distinct one checked by a recomputation; confirmed answers win the vote"

    def solve(self, backend, prompt_ids, judge, seed):
        o = self.opt
        atts = self._samples(backend, prompt_ids, judge, o.samples, seed)
        keys = [judge.key(a.answer) for a in atts]
        distinct = [k for i, k in enumerate(keys) if k is not None and k not in keys[:i]]
        answer_of = {k: next(a.answer for a, kk in zip(atts, keys) if kk == k) for k in distinct}
        checks = {}
        if distinct:
            prompts = [backend.encode_chat(check_messages(judge.problem.question, answer_of[k], o.check_exemplars)) for k in distinct]
            gens = backend.generate(prompts, o.sampling(temperature=0.0, n=1, seed=seed, max_tokens=o.step_tokens))
            for k, g in zip(distinct, gens):
                s = g.samples[0]
                check = attempt(judge, -1, s.token_ids, s.text, s.logprobs, s.finish_reason, s.generated, **s.tool_info)
                checks[k] = {"text": s.text, "value": check.answer,
                             "confirmed": check.answer is not None and judge.key(check.answer) == k}
        weights = [1.0 if k is not None and checks[k]["confirmed"] else o.unconfirmed_weight for k in keys]
        best, totals = weighted_vote(keys, weights)
        chosen = next((a for a, k in zip(atts, keys) if best is not None and k == best), None)
        for a, k in zip(atts, keys):
            if k is not None:
                a.info["confirmed"] = checks[k]["confirmed"]
        info = {"checks": {answer_of[k]: checks[k] for k in distinct},
                "confirmed": sum(c["confirmed"] for c in checks.values())}
        if chosen is None:
            return Outcome(None, 0.0, atts, info=info)
        chosen.selected = True
        return Outcome(chosen.answer, float(chosen.correct), atts, info=info)
