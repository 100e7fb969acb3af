"""The float64 NumPy reference forward pass of the Llama family.

Written to be obviously right, not fast: weights are dequantized to float64,
activations stay float64, and every step is the textbook formula.  Tests check
the fast path against it.
"""

from __future__ import annotations

import numpy as np

from ponder.loading.weights import ModelWeights, WeightTensor


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotate the two halves of each head (Hugging Face's rotate_half convention).  x: (T, heads, d)."""
    d = x.shape[-1]
    inv_freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class ReferenceModel:
    def __init__(self, weights: ModelWeights):
        self.w = weights
        self.c = weights.config
        self._dense: dict[int, np.ndarray] = {}

    def dense(self, t: WeightTensor) -> np.ndarray:
        if id(t) not in self._dense:
            self._dense[id(t)] = t.dequantize().astype(np.float64)
        return self._dense[id(t)]

    def new_cache(self) -> list[dict]:
        return [{"k": np.zeros((0, self.c.n_kv_heads, self.c.head_dim)),
                 "v": np.zeros((0, self.c.n_kv_heads, self.c.head_dim))} for _ in range(self.c.n_layers)]

    def forward(self, tokens, cache: list[dict]) -> np.ndarray:
        """Append `tokens` to the sequence held in `cache`; return their logits, shape (T, vocab)."""
        c = self.c
        tokens = np.asarray(tokens)
        start = cache[0]["k"].shape[0]
        positions = np.arange(start, start + len(tokens))
        x = self.w.embed.dequantize_rows(tokens).astype(np.float64)
        for layer, kv in zip(self.w.layers, cache):
            h = rms_norm(x, layer.attn_norm, c.norm_eps)
            q, k, v = h @ self.dense(layer.wq).T, h @ self.dense(layer.wk).T, h @ self.dense(layer.wv).T
            if layer.bq is not None:
                q, k, v = q + layer.bq, k + layer.bk, v + layer.bv
            q = rope(q.reshape(len(tokens), c.n_heads, c.head_dim), positions, c.rope_theta)
            k = rope(k.reshape(len(tokens), c.n_kv_heads, c.head_dim), positions, c.rope_theta)
            kv["k"] = np.concatenate([kv["k"], k])
            kv["v"] = np.concatenate([kv["v"], v.reshape(len(tokens), c.n_kv_heads, c.head_dim)])
            out = np.empty_like(q)
            total = kv["k"].shape[0]
            causal = positions[:, None] >= np.arange(total)[None, :]
            for head in range(c.n_heads):
                kvh = head // c.gqa_group
                scores = q[:, head] @ kv["k"][:, kvh].T / np.sqrt(c.head_dim)
                scores = np.where(causal, scores, -np.inf)
                out[:, head] = softmax(scores) @ kv["v"][:, kvh]
            x = x + out.reshape(len(tokens), -1) @ self.dense(layer.wo).T
            h = rms_norm(x, layer.ffn_norm, c.norm_eps)
            gate, up = h @ self.dense(layer.w_gate).T, h @ self.dense(layer.w_up).T
            x = x + (silu(gate) * up) @ self.dense(layer.w_down).T
        x = rms_norm(x, self.w.final_norm, c.norm_eps)
        return x @ self.dense(self.w.output).T
