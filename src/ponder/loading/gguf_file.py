"""Load a GGUF file: config, tokenizer metadata and memory-mapped tensors.

gguf_reader parses and checks the file's structure; this module checks what the
metadata claims (typed, in range: loading.config.make_config) and that the tensor
set is exactly the one the config implies, then keeps each tensor as a read-only
memory map in its own format.
"""

from __future__ import annotations

import math
import re

import numpy as np

from ponder.errors import ModelConfigError, ModelFormatError, UnsupportedArchitectureError
from ponder.kernels import quant_formats
from ponder.loading import gguf_reader
from ponder.loading.config import SUPPORTED_ARCHITECTURES, ModelConfig, make_config
from ponder.loading.weights import LayerWeights, ModelWeights, WeightTensor, unpermute_qk_rows

_LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                  "ffn_down")
_MISSING = object()


def read_gguf(path: str) -> tuple[ModelWeights, dict]:
    """Returns (weights, metadata).  Raises a ModelFormatError subclass on any bad input."""
    f = gguf_reader.read(path)
    check_tokenizer_metadata(path, f.metadata)
    tensors = {}
    for t in f.tensors.values():
        cols = int(t.shape[0])
        rows = math.prod(t.shape[1:])
        raw = f.tensor_bytes(t).reshape(rows, -1) if t.type_name in quant_formats.SUPPORTED else None
        tensors[t.name] = (t.type_name, rows, cols, raw)
    return _assemble(path, f.metadata, tensors), f.metadata


def meta_value(path: str, meta: dict, key: str, kind: str, default=_MISSING):
    """meta[key] checked to be of `kind` (int, float, bool, str, strings, ints); default if absent."""
    if key not in meta:
        if default is _MISSING:
            raise ModelConfigError(f"{path}: metadata key '{key}' is missing")
        return default
    v = meta[key]
    ok = {
        "int": lambda: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda: isinstance(v, bool),
        "str": lambda: isinstance(v, str),
        # a GGUF array holds one element type, so its first element tells
        "strings": lambda: isinstance(v, list) and (not v or isinstance(v[0], str)),
        "ints": lambda: isinstance(v, np.ndarray) and v.dtype.kind in "iu",
    }[kind]()
    if not ok:
        raise ModelConfigError(f"{path}: metadata key '{key}' has the wrong type (expected {kind})")
    return v


def check_tokenizer_metadata(path: str, meta: dict) -> None:
    """The tokenizer.ggml.* keys a Tokenizer reads: present, typed, and consistent with each other."""
    if "tokenizer.ggml.tokens" not in meta:
        raise ModelFormatError(f"{path} has no tokenizer (metadata key 'tokenizer.ggml.tokens' is missing)")
    tokens = meta_value(path, meta, "tokenizer.ggml.tokens", "strings")
    n = len(tokens)
    if n == 0:
        raise ModelConfigError(f"{path}: the tokenizer has no tokens")
    meta_value(path, meta, "tokenizer.ggml.model", "str", None)
    meta_value(path, meta, "tokenizer.ggml.pre", "str", None)
    meta_value(path, meta, "tokenizer.chat_template", "str", None)
    meta_value(path, meta, "tokenizer.ggml.add_bos_token", "bool", None)
    meta_value(path, meta, "tokenizer.ggml.merges", "strings", [])  # each merge is checked as it is split
    types = meta_value(path, meta, "tokenizer.ggml.token_type", "ints", None)
    if types is not None and len(types) != n:
        raise ModelConfigError(f"{path}: tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    for key in ("bos", "eos", "eot", "eom"):
        tid = meta_value(path, meta, f"tokenizer.ggml.{key}_token_id", "int", None)
        if tid is not None and not 0 <= tid < n:
            raise ModelConfigError(f"{path}: tokenizer.ggml.{key}_token_id {tid} is not a token id (0..{n - 1})")


def _config(path: str, meta: dict, n_vocab: int) -> ModelConfig:
    arch = meta_value(path, meta, "general.architecture", "str")
    if arch not in SUPPORTED_ARCHITECTURES:
        shown = repr(arch) if len(arch) < 40 else "of a name too long to show"
        raise UnsupportedArchitectureError(
            f"{path}: architecture {shown} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )

    def get(key, default=_MISSING):
        """(the key as the file names it, its value or the default): make_config checks the value."""
        full = f"{arch}.{key}"
        if full in meta:
            return full, meta[full]
        if default is _MISSING:
            raise ModelConfigError(f"{path}: metadata key '{full}' is missing")
        return full, default

    scaling = meta_value(path, meta, f"{arch}.rope.scaling.type", "str", "none")
    if scaling != "none":
        raise ModelFormatError(f"{path}: RoPE scaling {scaling[:40]!r} is not supported")
    n_heads = get("attention.head_count")
    config = make_config(path, arch, {
        "n_layers": get("block_count"),
        "dim": get("embedding_length"),
        "ffn_dim": get("feed_forward_length"),
        "n_heads": n_heads,
        "n_kv_heads": get("attention.head_count_kv", n_heads[1]),
        "head_dim": get("attention.key_length", None),
        "vocab_size": get("vocab_size", n_vocab),
        "rope_theta": get("rope.freq_base", 10000.0),
        "norm_eps": get("attention.layer_norm_rms_epsilon", 1e-5),
        "context_length": get("context_length", 2048),
    }, qkv_bias=arch == "qwen2")
    value_dim = meta_value(path, meta, f"{arch}.attention.value_length", "int", config.head_dim)
    if value_dim != config.head_dim:
        raise ModelConfigError(f"{path}: key and value head sizes differ ({config.head_dim} and {value_dim}); "
                               "ponder supports equal sizes")
    return config


def expected_tensors(config: ModelConfig, tied: bool) -> set[str]:
    names = {"token_embd.weight", "output_norm.weight"} | (set() if tied else {"output.weight"})
    per_layer = [f"{t}.weight" for t in _LAYER_TENSORS]
    if config.qkv_bias:
        per_layer += ["attn_q.bias", "attn_k.bias", "attn_v.bias"]
    return names | {f"blk.{i}.{t}" for i in range(config.n_layers) for t in per_layer}


def _assemble(path: str, meta: dict, tensors: dict) -> ModelWeights:
    n_vocab = len(meta.get("tokenizer.ggml.tokens", []))
    config = _config(path, meta, n_vocab)
    if config.vocab_size != n_vocab:
        raise ModelConfigError(f"{path}: vocab_size is {config.vocab_size} but the tokenizer has {n_vocab} tokens")
    tied = "output.weight" not in tensors
    expected = expected_tensors(config, tied)
    unexpected = sorted(set(tensors) - expected, key=_natural)
    if unexpected:
        raise ModelFormatError(
            f"{path}: tensor {unexpected[0]!r} is not part of the model the metadata describes "
            f"({config.arch}, block_count {config.n_layers})" + (f", nor are {len(unexpected) - 1} more"
                                                                 if len(unexpected) > 1 else ""))

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
    output = embed if tied else matrix("output.weight")
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
    weights = ModelWeights(config, embed, output, vector("output_norm.weight"), layers, source=path)
    weights.validate()
    return weights


def _natural(name: str):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]
