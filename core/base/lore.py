"""A character book (SillyTavern's "World Info"): lore the character knows, used when the talk turns to it.

Constant entries belong to the character instruction. Keyword entries are added to the user turn
whose words, or the messages just before it (the book's scan depth), first mention one of their
keys, once per conversation. The injection is a pure function of the history up to that turn, so
earlier turns re-tokenise to the same tokens every time and a conversation's KV cache stays valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_SCAN_DEPTH = 2  # the user's message and the reply before it, as SillyTavern does by default


@dataclass(frozen=True)
class LoreEntry:
    keys: tuple[str, ...]
    content: str
    secondary_keys: tuple[str, ...] = ()
    selective: bool = False  # then a secondary key must match too
    constant: bool = False  # always known: part of the instruction
    case_sensitive: bool = False

    def matches(self, text: str) -> bool:
        if not _any_key(self.keys, text, self.case_sensitive):
            return False
        return not (self.selective and self.secondary_keys) or _any_key(self.secondary_keys, text, self.case_sensitive)


@dataclass(frozen=True)
class Lorebook:
    entries: tuple[LoreEntry, ...] = ()
    scan_depth: int = DEFAULT_SCAN_DEPTH

    @classmethod
    def from_card(cls, book: dict[str, Any] | None) -> Lorebook:
        """The enabled entries of a Tavern Card V2 `character_book`, in insertion order."""
        if not isinstance(book, dict):
            return cls()
        raw = [e for e in book.get("entries") or [] if isinstance(e, dict)]
        raw = [e for e in raw if e.get("enabled", True) and str(e.get("content") or "").strip()]
        raw.sort(key=lambda e: _number(e.get("insertion_order"), 100))
        entries = tuple(
            LoreEntry(
                keys=_strings(e.get("keys")),
                content=str(e["content"]).strip(),
                secondary_keys=_strings(e.get("secondary_keys")),
                selective=bool(e.get("selective")),
                constant=bool(e.get("constant")),
                case_sensitive=bool(e.get("case_sensitive")),
            )
            for e in raw
        )
        depth = _number(book.get("scan_depth"), DEFAULT_SCAN_DEPTH)
        return cls(tuple(e for e in entries if e.constant or e.keys), max(1, depth))

    @property
    def constant(self) -> list[LoreEntry]:
        return [e for e in self.entries if e.constant]

    def triggered(self, recent: Sequence[str], already: Iterable[LoreEntry] = ()) -> list[LoreEntry]:
        """Keyword entries that the last `scan_depth` messages mention, leaving out those already used."""
        window = "\n".join(recent[-self.scan_depth :])
        used = set(already)
        return [e for e in self.entries if not e.constant and e not in used and e.matches(window)]


def _any_key(keys: Sequence[str], text: str, case_sensitive: bool) -> bool:
    return any(_key_pattern(k, case_sensitive).search(text) for k in keys)


def _key_pattern(key: str, case_sensitive: bool) -> re.Pattern[str]:
    """A whole word or phrase for keys in alphabetic scripts; a plain substring for CJK and the like,
    which do not put spaces between words."""
    flags = 0 if case_sensitive else re.IGNORECASE
    if key.isascii():
        return re.compile(rf"(?<!\w){re.escape(key)}(?!\w)", flags)
    return re.compile(re.escape(key), flags)


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v).strip() for v in value or [] if str(v).strip())


def _number(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
