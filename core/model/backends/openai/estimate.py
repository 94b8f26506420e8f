"""Counting a prompt's tokens without the model's tokenizer, corrected by what the server counts."""

from __future__ import annotations

import threading
from typing import Any


class TokenEstimate:
    """Images at their fixed count, text at about 4 characters of Latin script a token and a token a
    character of other scripts, scaled by what the server's own counts showed."""

    def __init__(self, image_tokens: int) -> None:
        self._image_tokens = image_tokens
        self._ratio = 1.0  # how the raw text estimate compares with the server's count
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]]) -> int:
        fixed, text = _parts(messages, self._image_tokens)
        return int(fixed + text * self._ratio) + 1

    def learn(self, actual: int, messages: list[dict[str, Any]]) -> None:
        """Set the text rate from the server's count of a prompt we sent (images count what they count)."""
        fixed, text = _parts(messages, self._image_tokens)
        if text > 0 and actual > fixed:
            with self._lock:
                self._ratio = min(max((actual - fixed) / text, 0.25), 8.0)


def _parts(messages: list[dict[str, Any]], image_tokens: int) -> tuple[float, float]:
    """A prompt's tokens in two parts: what is fixed (turn markers, images) and the text's raw estimate."""
    fixed = text = 0.0
    for message in messages:
        fixed += 6  # the turn's markers
        for item in message["content"]:
            if item["type"] == "image":
                fixed += image_tokens + 6  # its soft tokens and the markers around them
            else:
                ascii_chars = sum(1 for ch in item["text"] if ch.isascii())
                text += ascii_chars / 4 + (len(item["text"]) - ascii_chars)
    return fixed, text
