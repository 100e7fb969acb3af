"""ModelConfig: the hyperparameters of a Llama-family model, whatever file it came from.

`make_config` is the one gate both loaders (GGUF and Hugging Face) pass values
through: each must be a number of the right kind, finite and in a range a real
model can have, so a corrupt file fails here with its key named instead of as a
ZeroDivisionError, a NaN forward pass or a multi-GiB table later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder.errors import ModelConfigError

SUPPORTED_ARCHITECTURES = ("llama", "qwen2")

# Per-position work and memory are sized by the positions a request uses, not by this;
# the bound only rejects values no model has (the largest today declare ~2^23).
MAX_CONTEXT = 1 << 24

# field -> (smallest, largest) accepted
INT_LIMITS = {
    "n_layers": (1, 1024),
    "dim": (1, 1 << 16),
    "ffn_dim": (1, 1 << 20),
    "n_heads": (1, 1024),
    "n_kv_heads": (1, 1024),
    "head_dim": (2, 1024),
    "vocab_size": (1, 1 << 24),
    "context_length": (1, MAX_CONTEXT),
}
# field -> (exclusive lower bound, inclusive upper bound)
FLOAT_LIMITS = {
    "rope_theta": (1.0, 1e12),  # a base <= 1 makes the rotation frequencies grow, not fall
    "norm_eps": (0.0, 0.1),
}


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layers: int
    dim: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    rope_theta: float
    norm_eps: float
    context_length: int
    qkv_bias: bool = False

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def gqa_group(self) -> int:
        return self.n_heads // self.n_kv_heads

    def matmul_flops_per_token(self) -> int:
        """Multiply-adds x 2 of the weight products for one token (attention excluded)."""
        per_layer = self.dim * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.dim + 3 * self.dim * self.ffn_dim
        return 2 * (self.n_layers * per_layer + self.vocab_size * self.dim)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def make_config(source: str, arch: str, values: dict[str, tuple[str, object]], qkv_bias: bool = False) -> ModelConfig:
    """A checked ModelConfig.

    values: field -> (the key the file calls it, its value as read), in ModelConfig's
    field order; a head_dim of None means dim // n_heads.
    """
    out = {}
    for name, (key, value) in values.items():
        if name == "head_dim" and value is None:  # not given: the usual split of the hidden size
            value = out["dim"] // out["n_heads"]
        if name in INT_LIMITS:
            lo, hi = INT_LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ModelConfigError(f"{source}: {key} is {_short(value)}, not an integer")
            if not lo <= value <= hi:
                raise ModelConfigError(f"{source}: {key} is {value}, outside the range {lo}..{hi}")
        else:
            lo, hi = FLOAT_LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ModelConfigError(f"{source}: {key} is {_short(value)}, not a number")
            value = float(value)
            if not (math.isfinite(value) and lo < value <= hi):
                raise ModelConfigError(f"{source}: {key} is {value}, outside the range ({lo:g}, {hi:g}]")
        out[name] = value
    keys = {name: key for name, (key, _) in values.items()}
    if out["n_heads"] % out["n_kv_heads"]:
        raise ModelConfigError(f"{source}: {keys['n_heads']} ({out['n_heads']}) is not a multiple of "
                               f"{keys['n_kv_heads']} ({out['n_kv_heads']})")
    if out["head_dim"] % 2:
        raise ModelConfigError(f"{source}: {keys['head_dim']} is {out['head_dim']}; RoPE needs an even head size")
    return ModelConfig(arch=arch, qkv_bias=qkv_bias, **out)
