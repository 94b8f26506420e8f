"""Only the chat template speaks in control tokens (the transformers engine's side).

Hugging Face's tokenizer turns every `<start_of_turn>`, `<end_of_turn>`, `<start_of_image>` or
`<image_soft_token>` it finds in a string into that control token, wherever it came from. A person who
typed one, or a stranger's card that carries one, would then write turns of the conversation, or
leave a picture placeholder without a picture (every later reply fails). So the messages' text is
escaped before the template renders it: an unguessable mark is put inside each control token it holds;
tokenizing then splits the rendered prompt at the control tokens the template wrote (as the tokenizer
itself does) and reads the pieces between them as plain text, with the mark taken out: what was typed
is read as the characters typed. The GGUF engine does the same with llama.cpp's tokenizer
(`core.model.backends.gguf.prompt`).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from core.model.prompts import map_text


class ControlTokens:
    """The tokenizer's control tokens: escaping them in text, and tokenizing a rendered prompt."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        names = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        names |= set(tokenizer.all_special_tokens)
        ordered = sorted((n for n in names if n), key=len, reverse=True)  # the longest first, as the tokenizer
        self._find = re.compile("|".join(re.escape(n) for n in ordered)) if ordered else None
        self._mark = f"\ue000{secrets.token_hex(8)}\ue001"  # per process: no text can forge it

    def escape(self, text: str) -> str:
        """`text` with the mark after the first character of each control token in it."""
        if self._find is None or not text:
            return text
        return self._find.sub(lambda found: found.group()[0] + self._mark + found.group()[1:], text)

    def message(self, message: dict[str, Any]) -> dict[str, Any]:
        """A chat message whose text (a string, or the text items of a list) is escaped."""
        return map_text(message, self.escape)

    def ids(self, text: str) -> list[int]:
        """Token ids of a rendered prompt: its control tokens as themselves, every other piece as text."""
        if self._find is None:
            return self._plain(text)
        out: list[int] = []
        at = 0
        for found in self._find.finditer(text):
            out += self._plain(text[at : found.start()])
            out.append(self._tok.convert_tokens_to_ids(found.group()))
            at = found.end()
        return out + self._plain(text[at:])

    def _plain(self, text: str) -> list[int]:
        text = text.replace(self._mark, "")
        if not text:
            return []
        return self._tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
