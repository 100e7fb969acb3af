"""SamplingParams: how one request is decoded."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace

from ponder.errors import InvalidParameterError


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy.  top_k 0, top_p 1 and min_p 0 switch those filters off.

    `seed` keys the counter-based sampler: the same seed gives the same tokens,
    whatever else runs alongside.  When None, a seed is drawn and reported in the
    result so the output can still be replayed.  Sample i of a request draws as
    sample number first_sample + i of its seed, so samples can be requested in
    rounds (first_sample=0, n=4, then first_sample=4, n=4) and equal one request
    of n=8.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = None
    n: int = 1
    first_sample: int = 0  # the samples are numbers first_sample .. first_sample + n - 1 of this seed
    logprobs: int | None = None  # also return this many top alternatives per token

    def __post_init__(self):
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        checks = [
            (self.temperature >= 0, "temperature", "must be >= 0"),
            (self.top_k >= 0, "top_k", "must be >= 0"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p", "must be in [0, 1]"),
            (self.max_tokens >= 0, "max_tokens", "must be >= 0"),
            (self.n >= 1, "n", "must be >= 1"),
            (self.first_sample >= 0, "first_sample", "must be >= 0"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs", "must be between 0 and 20"),
            (self.seed is None or 0 <= self.seed < 2**63, "seed", "must be in [0, 2**63)"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise InvalidParameterError(f"{name} {why} (got {getattr(self, name)!r})", name)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_seed(self) -> SamplingParams:
        """A copy with a concrete seed, drawing one if none was given."""
        return self if self.seed is not None else replace(self, seed=secrets.randbits(63))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SamplingParams:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


