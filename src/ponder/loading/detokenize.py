"""Token ids -> text, incrementally, for streaming and for logprob token strings.

`IncrementalDetokenizer` decodes a growing list of token ids and hands out only
text that can no longer change: a token that ends inside a multi-byte UTF-8
character decodes to U+FFFD until the character is complete, so trailing U+FFFD
is held back; and text that could be the start of a stop string is held back
until it is clear whether the stop string follows (the final text is cut where
a stop string begins, and none of it may have been sent).

Decoding re-reads a short window of recent tokens (as vLLM does), so each token
costs O(window) rather than O(length).
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import pre_tokenizers

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""  # decoded text of complete characters
        self.sent = 0  # chars of self.text handed out
        self._prefix = 0  # window start: tokens before it are settled
        self._read = 0  # tokens whose text is in self.text
        self.stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self.stop), default=1) - 1

    def add(self, token_id: int) -> None:
        self.ids.append(int(token_id))
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix:self._read])
        now = decode(self.ids[self._prefix:])
        if len(now) > len(before) and not now.endswith(REPLACEMENT):
            self.text += now[len(before):]
            self._prefix, self._read = self._read, len(self.ids)

    def stop_index(self) -> int | None:
        """Where the first stop string starts in the text, if one has appeared."""
        lo = max(0, self.sent - self._hold)
        cuts = [i for i in (self.text.find(s, lo) for s in self.stop) if i >= 0]
        return min(cuts) if cuts else None

    def take(self) -> str:
        """The text that is now stable and not yet handed out."""
        end = len(self.text)
        cut = self.stop_index() if self.stop else None
        if cut is not None:
            end = cut
        elif self.stop:
            for k in range(min(self._hold, end - self.sent), 0, -1):
                tail = self.text[end - k:]
                if any(s.startswith(tail) for s in self.stop):
                    end -= k
                    break
        out = self.text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return out

    def finish(self, final_text: str) -> str:
        """The rest of the final text (as the engine reports it) after what was handed out."""
        out = final_text[self.sent:]
        self.sent = len(final_text)
        return out


def token_offsets(tokenizer, ids: list[int], start: int = 0) -> list[int]:
    """Character offset in decode(ids) at which each token's text starts (OpenAI's text_offset)."""
    d = IncrementalDetokenizer(tokenizer)
    out = []
    for t in ids:
        out.append(start + len(d.text))
        d.add(t)
    return out


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode map (ByteLevel BPE token symbols -> bytes)."""
    chars = pre_tokenizers.ByteLevel.alphabet()
    # Rebuild GPT-2's bytes_to_unicode deterministically.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = {chr(c): b for b, c in zip(bs, cs)}
    assert set(table) == set(chars)
    return table


class TokenStrings:
    """Per-token text and bytes, cached (the vocabulary is fixed)."""

    def __init__(self, tokenizer):
        from tokenizers import decoders

        self.tokenizer = tokenizer
        self._byte_level = isinstance(tokenizer.hf.decoder, decoders.ByteLevel)
        self._added = set(tokenizer.hf.get_added_tokens_decoder())
        self._text: dict[int, str] = {}

    def text(self, token_id: int) -> str:
        """The token's text; a token that is not whole UTF-8 is shown as OpenAI does: "bytes:\\xe2\\x82"."""
        t = self._text.get(token_id)
        if t is None:
            t = self.tokenizer.token_text(token_id)
            if REPLACEMENT in t:
                raw = bytes(self.bytes(token_id))
                try:
                    t = raw.decode("utf-8")
                except UnicodeDecodeError:
                    t = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self._text[token_id] = t
        return t

    def bytes(self, token_id: int) -> list[int]:
        """The UTF-8 bytes a token stands for (exact even when the token splits a character)."""
        if self._byte_level and token_id not in self._added:
            sym = self.tokenizer.hf.id_to_token(int(token_id))
            table = _byte_decoder()
            if sym is not None and all(c in table for c in sym):
                return [table[c] for c in sym]
        return list(self.tokenizer.token_text(token_id).encode("utf-8"))
