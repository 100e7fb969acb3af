"""Tiny random Llama-family models written by the tests themselves.

`write_gguf` writes a GGUF file with the `gguf` package's writer, the way
llama.cpp's converter would (Q/K rows permuted for `llama`, tokenizer in the
metadata); `write_hf` writes the same weights as a Hugging Face checkpoint
directory.  Loading both must give the same model.
"""

from __future__ import annotations

import json
import os
import struct

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGE_WORDS = ["the", "Ġthe", "an", "Ġand", "in", "Ġin", "er", "is", "Ġis", "at"]


def tiny_vocab() -> tuple[list[str], list[str]]:
    """Specials, the 256 byte symbols, and a few merges (each merge result is in the vocab)."""
    tokens = list(SPECIALS) + sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = []
    for word in MERGE_WORDS:
        parts = list(word) if not word.startswith("Ġ") else ["Ġ"] + list(word[1:])
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            if f"{parts[0]} {parts[1]}" not in merges:
                merges.append(f"{parts[0]} {parts[1]}")
            if merged not in tokens:
                tokens.append(merged)
            parts = [merged] + parts[2:]
    return tokens, merges


def tiny_hf_tokenizer() -> Tokenizer:
    tokens, merges = tiny_vocab()
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return tok


def random_weights(arch="llama", dim=64, ffn=128, n_heads=4, n_kv_heads=2, n_layers=2, seed=0, tied=True):
    """HF-convention float32 weights (name -> array) and the matching config dict."""
    rng = np.random.default_rng(seed)
    vocab = len(tiny_vocab()[0])
    hd = dim // n_heads

    def mat(rows, cols, scale=None):
        return (rng.standard_normal((rows, cols)) * (scale or 1 / np.sqrt(cols))).astype(np.float32)

    w = {"model.embed_tokens.weight": mat(vocab, dim, 1.0),
         # a small final norm keeps logits near unit scale, so sampling is not all-greedy
         "model.norm.weight": (0.1 + 0.01 * rng.standard_normal(dim)).astype(np.float32)}
    if not tied:
        w["lm_head.weight"] = mat(vocab, dim)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = mat(n_heads * hd, dim)
        w[p + "self_attn.k_proj.weight"] = mat(n_kv_heads * hd, dim)
        w[p + "self_attn.v_proj.weight"] = mat(n_kv_heads * hd, dim)
        w[p + "self_attn.o_proj.weight"] = mat(dim, n_heads * hd)
        w[p + "mlp.gate_proj.weight"] = mat(ffn, dim)
        w[p + "mlp.up_proj.weight"] = mat(ffn, dim)
        w[p + "mlp.down_proj.weight"] = mat(dim, ffn)
        w[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
        if arch == "qwen2":
            for n, size in (("q", n_heads * hd), ("k", n_kv_heads * hd), ("v", n_kv_heads * hd)):
                w[p + f"self_attn.{n}_proj.bias"] = (0.1 * rng.standard_normal(size)).astype(np.float32)
    config = {"model_type": arch, "hidden_size": dim, "intermediate_size": ffn, "num_attention_heads": n_heads,
              "num_key_value_heads": n_kv_heads, "num_hidden_layers": n_layers, "vocab_size": vocab,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
              "tie_word_embeddings": tied}
    return w, config


def _permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter permutation of Q/K rows (HF rotate-half -> adjacent pairs)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
               "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{i}.{_GGUF_NAMES[module]}.{kind}"


def write_gguf(path, weights, config, fmt="F32", arch=None, embed_fmt=None, overrides=None, skip=()):
    """Write `weights` (HF names, float32) as GGUF; matrices in `fmt`, norms and biases in F32.

    overrides: {gguf tensor name: (array, raw_dtype)} replaces a tensor as written.
    """
    arch = arch or config["model_type"]
    writer = gguf.GGUFWriter(str(path), arch)
    c = config
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_vocab_size(c["vocab_size"])
    tokens, merges = tiny_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    overrides = overrides or {}
    for hf_name, w in weights.items():
        name = gguf_name(hf_name)
        if name in skip:
            continue
        if arch == "llama" and ".q_proj." in hf_name:
            w = _permute(w, c["num_attention_heads"])
        elif arch == "llama" and ".k_proj." in hf_name:
            w = _permute(w, c["num_key_value_heads"])
        if name in overrides:
            data, qtype = overrides[name]
            writer.add_tensor(name, data, raw_dtype=qtype)
            continue
        f = (embed_fmt or fmt) if name == "token_embd.weight" else fmt
        if w.ndim == 1 or f == "F32":
            writer.add_tensor(name, w.astype(np.float32))
        else:
            qtype = gguf.GGMLQuantizationType[f]
            writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _bf16_bytes(w: np.ndarray) -> bytes:
    bits = w.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
    return rounded.astype(np.uint16).tobytes()


def write_safetensors(path, tensors: dict, dtype="F32"):
    """safetensors by hand, since NumPy cannot hold bfloat16."""
    header, blobs, offset = {}, [], 0
    for name, w in tensors.items():
        if dtype == "BF16":
            blob = _bf16_bytes(w)
        else:
            blob = w.astype(np.float16 if dtype == "F16" else np.float32).tobytes()
        header[name] = {"dtype": dtype, "shape": list(w.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def write_hf(directory, weights, config, dtype="F32"):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    write_safetensors(os.path.join(directory, "model.safetensors"), weights, dtype)
    tiny_hf_tokenizer().save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": CHATML,
                   "add_bos_token": False}, f)
    return directory
