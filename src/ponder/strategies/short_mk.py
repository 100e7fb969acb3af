"""short-m@k: run k samples in lockstep, stop when the first m have finished, vote among them.

"First to finish" means fewest generated tokens (Hassid et al., 2025: shorter reasoning
chains are more often right).  The k samples advance together in rounds of `chunk` tokens;
each round continues every unfinished sample as a new request whose prompt is the problem
plus that sample's tokens so far, so the prefix cache reuses all of it.  Each sample has its
own seed and the sampler is keyed by (seed, position), so a sample continued round by round
draws exactly the tokens it would have drawn in one request.  Within the round where the m-th
sample finishes, ties are broken by generated length, then by sample index.  Samples still
running are abandoned: their tokens so far count as compute.
"""

from __future__ import annotations

from ponder.strategies.base import Strategy, attempt, derive_seed
from ponder.strategies.sampling import vote


class ShortMK(Strategy):
    name = "short-m@k"
    describe = "k samples in lockstep; vote among the first m to finish (fewest tokens)"

    def solve(self, backend, prompt_ids, judge, seed):
        o = self.opt
        k, m = o.samples, max(1, min(o.m, o.samples))
        seeds = [derive_seed(seed, "sample", i) for i in range(k)]
        ids = [[] for _ in range(k)]
        lps = [[] for _ in range(k)]
        generated = [0] * k
        done: dict[int, str] = {}  # sample -> finish reason
        backend.warm(prompt_ids)  # one prefill, shared by all k requests through the prefix cache
        rounds = 0
        while len([i for i, r in done.items() if r == "eos"]) < m and len(done) < k:
            live = [i for i in range(k) if i not in done]
            # one batch, one request per sample: each keeps its own seed
            gens = backend.generate([prompt_ids + ids[i] for i in live],
                                    [o.sampling(n=1, seed=seeds[i], max_tokens=min(o.chunk, o.max_tokens - generated[i]))
                                     for i in live])
            rounds += 1
            for i, g in zip(live, gens):
                s = g.samples[0]
                ids[i] += s.token_ids
                lps[i] += s.logprobs
                generated[i] += s.generated
                if s.finish_reason == "eos" or generated[i] >= o.max_tokens:
                    done[i] = s.finish_reason if s.finish_reason == "eos" else "length"
        finished = sorted((i for i, r in done.items() if r == "eos"), key=lambda i: (generated[i], i))
        first = finished[:m] or sorted(range(k), key=lambda i: (generated[i], i))[:m]
        atts = [attempt(judge, i, ids[i], backend.decode(ids[i]), lps[i], done.get(i, "abandoned"), generated[i],
                        first=i in first) for i in range(k)]
        out = vote([atts[i] for i in first], judge, rounds=rounds, first=first)
        out.attempts = atts
        return out
