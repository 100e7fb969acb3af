"""Test-time strategies over a Backend: how many samples, how they are chosen, when to stop.

Each strategy is one small module; `make_strategy` builds one by name.
"""

from __future__ import annotations

from ponder.errors import InvalidParameterError
from ponder.strategies.adaptive import AdaptiveMajority
from ponder.strategies.backend import Backend, EngineBackend, Generation, Sample, Usage
from ponder.strategies.base import Attempt, Judge, Options, Outcome, Strategy, derive_seed
from ponder.strategies.beam import Beam
from ponder.strategies.best_of_n import BestOfN
from ponder.strategies.greedy import Greedy
from ponder.strategies.sampling import Majority
from ponder.strategies.sampling import Sample as SampleStrategy
from ponder.strategies.self_verify import SelfVerify
from ponder.strategies.short_mk import ShortMK
from ponder.strategies.smc import SMC

STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Greedy, SampleStrategy, Majority, AdaptiveMajority,
                                                             ShortMK, BestOfN, Beam, SelfVerify, SMC)}

__all__ = ["Attempt", "Backend", "EngineBackend", "Generation", "Judge", "Options", "Outcome", "STRATEGIES",
           "Sample", "Strategy", "Usage", "derive_seed", "make_strategy"]


def make_strategy(name: str, options: Options | None = None) -> Strategy:
    if name not in STRATEGIES:
        raise InvalidParameterError(f"unknown strategy {name!r}; valid: {', '.join(STRATEGIES)}", "strategy")
    return STRATEGIES[name](options)
