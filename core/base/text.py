"""Text and data every database takes and every reader parses, whatever a card or a user sent.

PostgreSQL refuses a NUL character in text and in JSON, SQLite's driver a lone UTF-16 surrogate,
and strict JSON readers (SillyTavern's `JSON.parse`) NaN and Infinity. `clean` fixes all three in
any JSON-like value, so nothing is refused half-way through storing a character or a message.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64  # deeper than any real card; a hostile one is cut off here


def clean_text(text: str) -> str:
    """The text without NUL characters and with lone surrogates replaced (U+FFFD)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x85\u2028\u2029]+\s*")


def one_line(text: str) -> str:
    """Text for a one-line field (a name, a title): cleaned, its line breaks turned into spaces."""
    return _LINE_BREAKS.sub(" ", clean_text(text)).strip()


def clean(value: Any, depth: int = 0) -> Any:
    """A JSON-like value made safe: strings cleaned, non-finite numbers become null, keys become text,
    and nesting past MAX_DEPTH is dropped."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {clean_text(str(k)): clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v, depth + 1) for v in value]
    return clean_text(str(value))


class JSONTooDeep(ValueError):
    """JSON nested deeper than the parser can follow: refused like any other JSON error."""


def loads(text: str | bytes) -> Any:
    """Strict JSON, as every file from outside is read: NaN and Infinity are refused (strict readers
    such as SillyTavern's `JSON.parse` refuse them too), and nesting too deep to parse is a
    `ValueError` (`JSONTooDeep`), not a `RecursionError` that escapes every handler."""

    def no_constant(word: str) -> Any:
        raise ValueError(f"{word} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except RecursionError as exc:
        raise JSONTooDeep("nested too deeply") from exc


def dumps(value: Any, *, compact: bool = False) -> str:
    """Strict JSON of a cleaned value, as UTF-8 readers want it (no NaN or Infinity, no `\\u` escapes
    for non-ASCII text): what every file the app writes holds."""
    return json.dumps(clean(value), ensure_ascii=False, allow_nan=False, separators=(",", ":") if compact else None)
