"""What a request cost: tokens computed, reused and generated, and estimated FLOPs and bytes.

The FLOP estimate counts the weight products (2 x parameters per token) and
attention (4 x layers x query width x context per token).  Bytes: a step reads
the weights once for all its tokens, so each token is charged its share of them,
plus the K/V it reads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Cost:
    computed_tokens: int = 0
    flops: float = 0.0
    bytes: float = 0.0

    def add(self, other: Cost) -> None:
        self.computed_tokens += other.computed_tokens
        self.flops += other.flops
        self.bytes += other.bytes


class CostModel:
    def __init__(self, config, weight_bytes: int):
        self.matmul_flops = config.matmul_flops_per_token()
        self.attn_flops_per_ctx = 4 * config.n_layers * config.q_dim
        self.kv_bytes_per_ctx = 2 * config.n_layers * config.kv_dim * 4
        self.weight_bytes = weight_bytes

    def chunk(self, start: int, length: int, step_tokens: int) -> Cost:
        """Cost of computing positions [start, start + length) in a step of step_tokens tokens."""
        ctx_sum = length * start + length * (length + 1) // 2  # sum of context lengths
        return Cost(
            computed_tokens=length,
            flops=length * self.matmul_flops + self.attn_flops_per_ctx * ctx_sum,
            bytes=self.weight_bytes * length / step_tokens + self.kv_bytes_per_ctx * ctx_sum,
        )
