"""Prompt encoding and validation: the one place a prompt is checked before it becomes work.

The server calls `PromptChecker.check` (through `Engine.check_prompt`) while
answering the HTTP request, so a prompt too long for the context window or the
KV pool is refused before it is queued, with the same message the engine gives.
"""

from __future__ import annotations

import numpy as np

from ponder.errors import ContextLengthError, InvalidParameterError


def encode(tokenizer, prompt) -> list[int]:
    """Token ids of a prompt given as text, token ids, or chat messages (rendered with the chat template)."""
    if isinstance(prompt, str):
        return tokenizer.encode(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        return tokenizer.encode(tokenizer.apply_chat_template(prompt))
    if isinstance(prompt, list) and prompt and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool)
                                                    for t in prompt):
        return [int(t) for t in prompt]
    raise InvalidParameterError("a prompt is a non-empty string, list of token ids, or list of chat messages", "prompt")


class PromptChecker:
    def __init__(self, vocab_size: int, context_length: int, kv_positions: int):
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.kv_positions = kv_positions  # positions the whole KV pool holds

    def check_ids(self, ids: list[int], field: str = "prompt") -> None:
        """Raise InvalidParameterError naming `field` if an id is outside the vocabulary."""
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InvalidParameterError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})", field)

    def check(self, ids: list[int], generate: bool = True) -> None:
        """Raise a PonderError if ids cannot be run: ids outside the vocabulary, or too long.

        generate: the prompt must leave room for at least one generated token (scoring need not).
        """
        if not ids:
            raise InvalidParameterError("the prompt is empty", "prompt")
        self.check_ids(ids)
        ctx, need = self.context_length, len(ids) + (1 if generate else 0)
        if need > ctx:
            room = ", which leaves no room to generate" if generate else ""
            raise ContextLengthError(f"the prompt is {len(ids)} tokens; the model's context window is {ctx}{room}")
        if need > self.kv_positions:
            raise ContextLengthError(f"the prompt is {len(ids)} tokens but the KV pool holds only "
                                     f"{self.kv_positions} positions (start with a larger KV pool)")
