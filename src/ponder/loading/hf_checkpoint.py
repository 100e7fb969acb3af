"""Load a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json).

safetensors files are memory-mapped from the offsets in their header rather than
read through the `safetensors` package, because NumPy has no bfloat16 and we want
BF16 kept as its raw 16 bits, unexpanded, like every other format.
"""

from __future__ import annotations

import json
import math
import os
import struct
from glob import glob

import numpy as np

from ponder.errors import ModelConfigError, ModelFormatError, TensorShapeError, UnsupportedArchitectureError
from ponder.loading.config import SUPPORTED_ARCHITECTURES, make_config
from ponder.loading.weights import LayerWeights, ModelWeights, WeightTensor

_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16"}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}
_MISSING = object()


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ModelFormatError(f"{path} is not valid JSON: {e}") from None


def read_safetensors(path: str) -> dict[str, tuple[str, list[int], np.ndarray | None]]:
    """name -> (dtype, shape, uint8 memmap of the raw bytes or None for an unsupported dtype)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFormatError(f"{path} is truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ModelFormatError(f"{path} is truncated or not a safetensors file (header of {n} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelFormatError(f"{path} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{path} is not a safetensors file (header is not a JSON object)")
    header.pop("__metadata__", None)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        dtype, shape, offsets = _tensor_entry(path, name, info)
        start, end = offsets
        if 8 + n + end > size:
            raise ModelFormatError(f"{path} is truncated: tensor {name!r} ends past the end of the file")
        if dtype in _ITEMSIZE and end - start != math.prod(shape) * _ITEMSIZE[dtype]:
            raise ModelFormatError(f"{path}: tensor {name!r} has {end - start} bytes for shape {shape} of {dtype}")
        out[name] = (dtype, shape, mm[8 + n + start: 8 + n + end] if dtype in _DTYPES else None)
    return out


def _tensor_entry(path: str, name: str, info) -> tuple[str, list[int], tuple[int, int]]:
    """A header entry's (dtype, shape, data_offsets), checked for type and sign."""
    def ints(v, count=None):
        return (isinstance(v, list) and (count is None or len(v) == count)
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v))

    if not (isinstance(info, dict) and isinstance(info.get("dtype"), str) and ints(info.get("shape"))
            and ints(info.get("data_offsets"), 2) and info["data_offsets"][0] <= info["data_offsets"][1]):
        raise ModelFormatError(f"{path}: the header entry of tensor {name!r} is malformed "
                               "(needs dtype, shape and two ordered data_offsets)")
    return info["dtype"], info["shape"], tuple(info["data_offsets"])


def _config_values(directory: str, cfg: dict) -> dict[str, tuple[str, object]]:
    """config.json's values by ModelConfig field, for make_config to check."""
    source = os.path.join(directory, "config.json")

    def get(key, default=_MISSING):
        if key in cfg and cfg[key] is not None:
            return key, cfg[key]
        if default is _MISSING:
            raise ModelConfigError(f"{source}: {key} is missing")
        return key, default

    dim, n_heads = get("hidden_size"), get("num_attention_heads")
    return {
        "n_layers": get("num_hidden_layers"), "dim": dim, "ffn_dim": get("intermediate_size"),
        "n_heads": n_heads, "n_kv_heads": get("num_key_value_heads", n_heads[1]),
        "head_dim": get("head_dim", None), "vocab_size": get("vocab_size"),
        "rope_theta": get("rope_theta", 10000.0), "norm_eps": get("rms_norm_eps", 1e-5),
        "context_length": get("max_position_embeddings", 2048),
    }


def read_hf_checkpoint(directory: str) -> tuple[ModelWeights, dict]:
    cfg = _read_json(os.path.join(directory, "config.json"))
    if not cfg:
        raise ModelFormatError(f"{directory} has no config.json")
    if not isinstance(cfg, dict):
        raise ModelFormatError(f"{directory}/config.json is not a JSON object")
    arch = cfg.get("model_type")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{directory}: model_type {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    if cfg.get("rope_scaling"):
        raise ModelFormatError(f"{directory}: rope_scaling {cfg['rope_scaling']} is not supported")
    config = make_config(os.path.join(directory, "config.json"), arch, _config_values(directory, cfg),
                         qkv_bias=arch == "qwen2")
    files = sorted(glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise ModelFormatError(f"{directory} has no *.safetensors files")
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(f))

    def matrix(name: str) -> WeightTensor:
        if name not in tensors:
            raise ModelFormatError(f"{directory}: tensor {name!r} is missing")
        dtype, shape, raw = tensors[name]
        if not shape or 0 in shape:
            raise TensorShapeError(f"{directory}: tensor {name!r} has shape {shape}, with no elements")
        rows, cols = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, shape[0])
        if raw is None:
            return WeightTensor(name, dtype, rows, cols, np.empty((rows, 0), np.uint8))  # raises: unsupported type
        if raw.size != rows * cols * _ITEMSIZE[dtype]:
            raise ModelFormatError(f"{directory}: tensor {name!r} has {raw.size} bytes for shape {shape}")
        return WeightTensor(name, dtype, rows, cols, raw.reshape(rows, -1))

    def vector(name: str) -> np.ndarray:
        return matrix(name).dequantize().reshape(-1)

    embed = matrix("model.embed_tokens.weight")
    tied = cfg.get("tie_word_embeddings", False) or "lm_head.weight" not in tensors
    output = embed if tied else matrix("lm_head.weight")
    layers = []
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        bias = (lambda n: vector(p + f"self_attn.{n}_proj.bias")) if config.qkv_bias else (lambda n: None)
        layers.append(LayerWeights(
            attn_norm=vector(p + "input_layernorm.weight"),
            wq=matrix(p + "self_attn.q_proj.weight"), wk=matrix(p + "self_attn.k_proj.weight"),
            wv=matrix(p + "self_attn.v_proj.weight"), wo=matrix(p + "self_attn.o_proj.weight"),
            ffn_norm=vector(p + "post_attention_layernorm.weight"),
            w_gate=matrix(p + "mlp.gate_proj.weight"), w_up=matrix(p + "mlp.up_proj.weight"),
            w_down=matrix(p + "mlp.down_proj.weight"),
            bq=bias("q"), bk=bias("k"), bv=bias("v"),
        ))
    weights = ModelWeights(config, embed, output, vector("model.norm.weight"), layers)
    weights.validate()
    tok_cfg = _read_json(os.path.join(directory, "tokenizer_config.json"))
    gen_cfg = _read_json(os.path.join(directory, "generation_config.json"))
    return weights, {"tokenizer_config": tok_cfg, "generation_config": gen_cfg}
