"""Running one strategy on one problem through a backend, with the usage it cost: shared by the
strategy tests."""

from ponder.strategies import Judge, Options, derive_seed, make_strategy
from ponder.tasks import messages


def solve(backend, problem, name, **opts):
    # small budgets: the tiny models' context (256 tokens) has no room for self-verify's worked checks
    strat = make_strategy(name, Options(**{"samples": 4, "max_tokens": 12, "check_exemplars": 0, **opts}))
    prompt = backend.encode_chat(messages(problem))
    before = backend.usage
    out = strat.solve(backend, prompt, Judge(problem), derive_seed(0, problem.id))
    out.usage = backend.usage - before
    return out
