"""SamplingParams: how one request is decoded."""

from __future__ import annotations

import math
import numbers
import secrets
from dataclasses import dataclass, replace

from ponder.errors import InvalidParameterError

MAX_N = 1024  # samples per request: each is a sequence the scheduler tracks
MAX_TOP_LOGPROBS = 20
_F32_MAX = 3.4028234663852886e38


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def _short(v) -> str:
    try:
        r = repr(v)
    except ValueError:  # an integer with more digits than Python will print
        return "an integer too large to print"
    return r if len(r) <= 40 else r[:37] + "..."


def validate(p: SamplingParams) -> None:
    """Raise InvalidParameterError naming the first field out of range (the one check, engine and server)."""
    checks = [
        (_is_real(p.temperature) and p.temperature >= 0, "temperature", "must be a finite number >= 0"),
        (_is_int(p.top_k) and p.top_k >= 0, "top_k", "must be an integer >= 0"),
        (_is_real(p.top_p) and 0 < p.top_p <= 1, "top_p", "must be a number in (0, 1]"),
        (_is_real(p.min_p) and 0 <= p.min_p <= 1, "min_p", "must be a number in [0, 1]"),
        (_is_int(p.max_tokens) and p.max_tokens >= 0, "max_tokens", "must be an integer >= 0"),
        (_is_int(p.n) and 1 <= p.n <= MAX_N, "n", f"must be an integer in [1, {MAX_N}]"),
        (_is_int(p.first_sample) and 0 <= p.first_sample and p.first_sample + (p.n if _is_int(p.n) else 1) <= 2**64,
         "first_sample", "must be an integer >= 0 with first_sample + n <= 2**64"),
        (p.logprobs is None or (_is_int(p.logprobs) and 0 <= p.logprobs <= MAX_TOP_LOGPROBS), "logprobs",
         f"must be an integer between 0 and {MAX_TOP_LOGPROBS}"),
        (p.seed is None or (_is_int(p.seed) and 0 <= p.seed < 2**63), "seed", "must be an integer in [0, 2**63)"),
        (isinstance(p.ignore_eos, bool), "ignore_eos", "must be true or false"),
    ]
    for ok, name, why in checks:
        if not ok:
            raise InvalidParameterError(f"{name} {why} (got {_short(getattr(p, name))})", name)


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
        if not isinstance(self.stop, (tuple, list)) or not all(isinstance(x, str) for x in self.stop):
            raise InvalidParameterError(f"stop must be a string or a list of strings (got {_short(self.stop)})", "stop")
        object.__setattr__(self, "stop", tuple(self.stop))
        ids = self.stop_token_ids
        if not isinstance(ids, (tuple, list)) or not all(_is_int(t) and t >= 0 for t in ids):
            raise InvalidParameterError(f"stop_token_ids must be a list of token ids (got {_short(ids)})",
                                        "stop_token_ids")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in ids))
        validate(self)

    @property
    def greedy(self) -> bool:
        """Temperature 0, or one so small that 1/T overflows float32: the limit is the argmax."""
        return self.temperature == 0 or self.temperature < 1.0 / _F32_MAX

    def with_seed(self) -> SamplingParams:
        """A copy with a concrete seed, drawing one if none was given."""
        return self if self.seed is not None else replace(self, seed=secrets.randbits(63))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SamplingParams:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


