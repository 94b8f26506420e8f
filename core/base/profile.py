"""The character profile's field lists, read from its one definition (`storage.tables.CharacterProfile`).

The table is that class; the prompt reads the fields marked `prompt`, the card mapping those marked
`card`, and the forms edit each field by its `kind`. Adding a field there adds it everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.tables import MAX_LINE as MAX_LINE  # the profile's length limits, enforced by its validation
from storage.tables import MAX_TEXT as MAX_TEXT
from storage.tables import CharacterProfile

Profile = CharacterProfile  # the value type services and prompts pass around


@dataclass(frozen=True)
class ProfileField:
    name: str
    kind: str  # "line" | "text" | "greetings" | "tags" | "language" | "data"
    prompt: bool  # the model reads it
    card: bool  # a Tavern card `data` field of the same name

    @property
    def label_key(self) -> str:
        return f"field.{self.name}"


FIELDS: tuple[ProfileField, ...] = tuple(
    ProfileField(name, **(info.json_schema_extra or {})) for name, info in CharacterProfile.model_fields.items()
)
BY_NAME: dict[str, ProfileField] = {f.name: f for f in FIELDS}
PROMPT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.prompt)
CARD_TEXT_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.card and f.kind in ("line", "text"))
CARD_LIST_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.card and f.kind in ("greetings", "tags"))
EDITABLE: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind != "data")  # what a form can show


def profile_of(source: Any) -> Profile:
    """The profile of a character row (or any object with the fields); missing ones take defaults."""
    if isinstance(source, Mapping):
        values = {k: v for k, v in source.items() if k in BY_NAME}
    else:
        values = {f.name: getattr(source, f.name) for f in FIELDS if hasattr(source, f.name)}
    return Profile.model_validate({k: v for k, v in values.items() if v is not None or k == "character_book"})


def split_greetings(text: str, separator: str = "---") -> list[str]:
    """Alternate greetings as edited in one box: separated by a line holding only `separator`."""
    parts, current = [], []
    for line in text.splitlines():
        if line.strip() == separator:
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    return [p.strip() for p in parts if p.strip()]


def join_greetings(greetings: list[str], separator: str = "---") -> str:
    return f"\n{separator}\n".join(greetings)


def split_tags(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]
