"""Load a GGUF file: config, tokenizer metadata and memory-mapped tensors.

The `gguf` package parses the file; this module turns its fields into a
ModelConfig, checks what the file claims against what it holds, and keeps each
tensor as a read-only memory map in its own format.
"""

from __future__ import annotations

import os

import numpy as np

from ponder.errors import ModelFormatError, UnsupportedArchitectureError
from ponder.kernels import quant_formats
from ponder.loading.config import SUPPORTED_ARCHITECTURES, ModelConfig
from ponder.loading.weights import LayerWeights, ModelWeights, WeightTensor, unpermute_qk_rows

GGUF_MAGIC = b"GGUF"


def read_gguf(path: str) -> tuple[ModelWeights, dict]:
    """Returns (weights, metadata).  Raises a ModelFormatError subclass on any bad input."""
    from gguf import GGUFReader

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFormatError(f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = GGUFReader(path, "r")
    except Exception as e:  # the gguf package raises assorted errors on truncation
        raise ModelFormatError(f"{path} is truncated or corrupt: {type(e).__name__}: {e}") from None

    meta = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = field.contents()
        except Exception:  # a value we don't need and the package can't render
            continue

    size = os.path.getsize(path)
    tensors = {}
    for t in reader.tensors:
        end = t.data_offset + t.n_bytes
        if end > size:
            raise ModelFormatError(f"{path} is truncated: tensor {t.name!r} ends at byte {end} but the file has {size}")
        fmt = t.tensor_type.name
        cols = int(t.shape[0])
        rows = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
        raw = np.asarray(t.data).view(np.uint8).reshape(rows, -1)
        if fmt not in quant_formats.SUPPORTED:
            tensors[t.name] = (fmt, rows, cols, None)
        else:
            tensors[t.name] = (fmt, rows, cols, raw)
    return _assemble(path, meta, tensors), meta


def _config(path: str, meta: dict, n_vocab: int) -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{path}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )

    def get(key, default=None):
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise ModelFormatError(f"{path}: metadata key '{arch}.{key}' is missing")
        return value

    dim, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    if "rope.scaling.type" in meta and meta.get(f"{arch}.rope.scaling.type") not in (None, "none"):
        raise ModelFormatError(f"{path}: RoPE scaling {meta[f'{arch}.rope.scaling.type']!r} is not supported")
    return ModelConfig(
        arch=arch,
        n_layers=int(get("block_count")),
        dim=dim,
        ffn_dim=int(get("feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(get("attention.head_count_kv", n_heads)),
        head_dim=int(get("attention.key_length", dim // n_heads)),
        vocab_size=int(get("vocab_size", n_vocab)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        context_length=int(get("context_length", 2048)),
        qkv_bias=arch == "qwen2",
    )


def _assemble(path: str, meta: dict, tensors: dict) -> ModelWeights:
    n_vocab = len(meta.get("tokenizer.ggml.tokens", [])) or tensors.get("token_embd.weight", (0, 0))[1]
    config = _config(path, meta, n_vocab)

    def matrix(name: str) -> WeightTensor:
        if name not in tensors:
            raise ModelFormatError(f"{path}: tensor {name!r} is missing")
        fmt, rows, cols, raw = tensors[name]
        return WeightTensor(name, fmt, rows, cols, raw if raw is not None else np.empty((rows, 0), np.uint8))

    def vector(name: str) -> np.ndarray:
        t = matrix(name)
        return t.dequantize().reshape(-1)

    def optional_vector(name: str):
        return vector(name) if name in tensors else None

    embed = matrix("token_embd.weight")
    output = matrix("output.weight") if "output.weight" in tensors else embed
    layers = []
    for i in range(config.n_layers):
        p = f"blk.{i}."
        wq, wk = matrix(p + "attn_q.weight"), matrix(p + "attn_k.weight")
        if config.arch == "llama" and wq.rows == config.q_dim and wk.rows == config.kv_dim:
            wq = wq.select_rows(unpermute_qk_rows(config.n_heads, config.head_dim))
            wk = wk.select_rows(unpermute_qk_rows(config.n_kv_heads, config.head_dim))
        layers.append(LayerWeights(
            attn_norm=vector(p + "attn_norm.weight"),
            wq=wq, wk=wk, wv=matrix(p + "attn_v.weight"), wo=matrix(p + "attn_output.weight"),
            ffn_norm=vector(p + "ffn_norm.weight"),
            w_gate=matrix(p + "ffn_gate.weight"), w_up=matrix(p + "ffn_up.weight"),
            w_down=matrix(p + "ffn_down.weight"),
            bq=optional_vector(p + "attn_q.bias"), bk=optional_vector(p + "attn_k.bias"),
            bv=optional_vector(p + "attn_v.bias"),
        ))
    weights = ModelWeights(config, embed, output, vector("output_norm.weight"), layers)
    weights.validate()
    return weights
