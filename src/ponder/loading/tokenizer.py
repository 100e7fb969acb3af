"""Tokenizer: text <-> token ids, special tokens, BOS/EOS, chat prompts.

Built on Hugging Face `tokenizers`: from `tokenizer.json` for checkpoint
directories, or assembled from a GGUF file's `tokenizer.ggml.*` metadata (a
byte-level BPE with merges and the pre-tokenizer that `tokenizer.ggml.pre` names,
following llama.cpp's table of pre-tokenizers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ponder.errors import ModelFormatError
from ponder.loading.chat_template import ChatTemplate

# llama.cpp's token types (llama_token_type): CONTROL and USER_DEFINED tokens are
# matched verbatim in text instead of being split by BPE.
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4

_LONG_TEXT = 1 << 16  # characters; see Tokenizer.encode

_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(use_regex: bool):
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex)


def _split_then_bytes(regex: str):
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        _byte_level(False),
    ])


def _digits_then_gpt2():
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level(True)])


# tokenizer.ggml.pre -> (pre-tokenizer factory, BPE ignore_merges)
_PRE_TOKENIZERS = {
    "default": (lambda: _byte_level(True), False),
    "gpt-2": (lambda: _byte_level(True), False),
    "gpt2": (lambda: _byte_level(True), False),
    "smollm": (_digits_then_gpt2, False),
    "starcoder": (_digits_then_gpt2, False),
    "refact": (_digits_then_gpt2, False),
    "llama3": (lambda: _split_then_bytes(_LLAMA3_REGEX), True),
    "llama-bpe": (lambda: _split_then_bytes(_LLAMA3_REGEX), True),
    "llama-v3": (lambda: _split_then_bytes(_LLAMA3_REGEX), True),
    "smaug-bpe": (lambda: _split_then_bytes(_LLAMA3_REGEX), True),
    "qwen2": (lambda: _split_then_bytes(_QWEN2_REGEX), False),
    "deepseek-r1-qwen": (lambda: _split_then_bytes(_QWEN2_REGEX), False),
}


class Tokenizer:
    def __init__(self, hf: HFTokenizer, *, bos_id: int | None, eos_ids: Sequence[int], add_bos: bool,
                 chat_template: str | None):
        self.hf = hf
        self.bos_id = bos_id
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        self.add_bos = add_bos
        self.template = ChatTemplate(chat_template, self._token_text(bos_id), self._token_text(min(self.eos_ids, default=None)))

    # -- construction -------------------------------------------------------
    @classmethod
    def from_gguf_metadata(cls, meta: dict, source: str = "the model") -> Tokenizer:
        """From a GGUF file's tokenizer.ggml.* keys, as checked by gguf_file.check_tokenizer_metadata."""
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ModelFormatError(
                f"{source}: tokenizer model {model!r} is not supported; ponder reads byte-level BPE ('gpt2') tokenizers"
            )
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre not in _PRE_TOKENIZERS:
            raise ModelFormatError(
                f"{source}: pre-tokenizer {pre!r} is not supported (supported: {', '.join(sorted(_PRE_TOKENIZERS))})"
            )
        tokens = meta["tokenizer.ggml.tokens"]
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
        for i, pair in enumerate(merges):  # (one with two spaces fails in BPE(): "b c" is no token)
            if len(pair) != 2:
                raise ModelFormatError(f"{source}: merge {i} of tokenizer.ggml.merges has no space between two tokens")
        make_pre, ignore_merges = _PRE_TOKENIZERS[pre]
        try:
            bpe = models.BPE(vocab=dict(zip(tokens, range(len(tokens)))), merges=merges, ignore_merges=ignore_merges)
        except Exception as e:  # the tokenizers library raises plain Exceptions on inconsistent merges
            raise ModelFormatError(f"{source}: the tokenizer's vocabulary and merges disagree: "
                                   f"{str(e).splitlines()[0]}") from None
        hf = HFTokenizer(bpe)
        hf.pre_tokenizer = make_pre()
        hf.decoder = decoders.ByteLevel()
        types = meta.get("tokenizer.ggml.token_type")
        if types is not None:
            special = np.flatnonzero((types == _TOKEN_TYPE_CONTROL) | (types == _TOKEN_TYPE_USER_DEFINED))
            hf.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in special])
        eos = [meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                 "tokenizer.ggml.eom_token_id") if k in meta]
        return cls(hf, bos_id=meta.get("tokenizer.ggml.bos_token_id"), eos_ids=eos,
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                   chat_template=meta.get("tokenizer.chat_template"))

    @classmethod
    def from_hf_files(cls, tokenizer_json: str, tokenizer_config: dict, generation_config: dict) -> Tokenizer:
        hf = HFTokenizer.from_file(tokenizer_json)

        def token_id(value):
            if isinstance(value, dict):  # {"content": "<s>", ...}
                value = value.get("content")
            return hf.token_to_id(value) if isinstance(value, str) else None

        bos = token_id(tokenizer_config.get("bos_token"))
        eos = generation_config.get("eos_token_id", token_id(tokenizer_config.get("eos_token")))
        eos_ids = [e for e in (eos if isinstance(eos, list) else [eos]) if e is not None]
        return cls(hf, bos_id=bos, eos_ids=eos_ids, add_bos=bool(tokenizer_config.get("add_bos_token", False)),
                   chat_template=tokenizer_config.get("chat_template"))

    # -- use ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Text -> ids.  Special-token text (e.g. '<|im_start|>') becomes its token, as in chat prompts."""
        # A long text goes through encode_batch, which releases the GIL while it works (encode holds it
        # for seconds on a megabyte), so the server's event loop runs on while a worker thread tokenizes.
        encode = self.hf.encode if len(text) < _LONG_TEXT else lambda t, **kw: self.hf.encode_batch([t], **kw)[0]
        ids = encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            if not ids or ids[0] != self.bos_id:
                ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def token_text(self, token_id: int) -> str:
        return self.hf.decode([int(token_id)], skip_special_tokens=False)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.template.render(messages, add_generation_prompt=add_generation_prompt)

    def _token_text(self, token_id: int | None) -> str:
        return "" if token_id is None else self.hf.id_to_token(int(token_id)) or ""
