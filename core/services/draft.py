"""Read the sheet: the model drafts a character's profile from its pictures and the user's notes.

The model is asked for one JSON object (the schema is in the prompt) and its answer is read with
`json_repair`, which mends what models get wrong: code fences, a chatty line before or after, trailing
commas, an object cut off by the length limit. Whatever still does not parse is handed back as text
for the notes, never raised. The pictures and notes form a fixed prefix and the task comes after
them, so drafting one field again reuses what the model already read (its prefix KV cache, or a
server's prefix cache) instead of reading every sheet again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import json_repair

from core.base.languages import language_name
from core.base.profile import MAX_LINE, MAX_TEXT, split_tags
from core.base.sampling import SamplerSettings
from core.base.sheets import Picture
from core.base.text import clean_text
from core.model.backend import Backend, OnProgress, ReplyRequest, ReplyStream
from core.model.prompts import CharacterPrompt, Turn

# What the model writes (its JSON keys, with what each should hold), and the profile field each fills.
SCHEMA: dict[str, tuple[str, str]] = {
    "name": ("name", "the character's name, as written on the sheet if it is there"),
    "appearance": ("description", "what the pictures show: build, face, hair, eyes, colours, clothes, "
                   "accessories, notable marks; 3 to 5 sentences"),
    "personality": ("personality", "temperament, values, likes and dislikes, as the design suggests; 2 to 4 sentences"),
    "speaking_style": ("personality", "how the character talks: tone, pace, favourite words; 1 or 2 sentences"),
    "scenario": ("scenario", "where and how the user meets the character; 1 or 2 sentences"),
    "greeting": ("first_mes", "the character's first message to the user, in character, 2 to 4 sentences, "
                 "with actions in *asterisks*"),
    "alternate_greetings": ("alternate_greetings", "a list of two other opening messages, different situations"),
    "tags": ("tags", "a list of 3 to 8 short lowercase tags (e.g. fantasy, elf, shy)"),
}  # fmt: skip
FIELDS: tuple[str, ...] = tuple(dict.fromkeys(target for target, _ in SCHEMA.values()))  # form order
KEYS_FOR: dict[str, tuple[str, ...]] = {f: tuple(k for k, (t, _) in SCHEMA.items() if t == f) for f in FIELDS}
STYLE_LABEL = "Speaking style"  # joins the speaking style to the personality paragraph
MAX_TAGS, MAX_TAG, MAX_GREETINGS = 12, 40, 5
FULL_REPLY_TOKENS, FIELD_REPLY_TOKENS = 1024, 384
KICKOFF = "(Study the pictures and the notes closely before you answer.)"
READY = "I have studied the reference pictures and the notes."


@dataclass(frozen=True)
class Draft:
    """Profile values drafted from the sheet (by profile field), and any text that did not parse."""

    fields: dict[str, Any] = field(default_factory=dict)
    leftover: str = ""

    @property
    def found(self) -> tuple[str, ...]:
        return tuple(name for name in FIELDS if self.fields.get(name))


def draft_prefix(images: Sequence[Picture], notes: str, language: str) -> CharacterPrompt:
    """What the model reads before any task: the pictures and the notes (the same for every field)."""
    if not images:
        raise ValueError("Reading the sheet needs at least the main reference sheet.")
    lines = [
        "You help a writer create a role-play character from its reference sheet.",
        "The first picture is the character's reference sheet: its design, colours, clothes and every note written "
        "on it." + (f" The {len(images) - 1} picture(s) after it show the same character." if len(images) > 1 else ""),
        f"Write everything in {language_name(language)}, keeping names as they are written on the sheet.",
    ]
    if notes.strip():
        lines += ["", "The writer's notes about the character:", clean_text(notes.strip())]
    return CharacterPrompt("\n".join(lines), tuple(images), KICKOFF)


def draft_task(only: str | None = None, name: str = "") -> str:
    """The question after the pictures: the whole profile, or one field of it (`only`: a profile field)."""
    keys = KEYS_FOR[only] if only else tuple(SCHEMA)
    shape = "{" + ", ".join(f'"{k}": ' + ('["…", "…"]' if k in ("tags", "alternate_greetings") else '"…"')
                            for k in keys) + "}"  # fmt: skip
    what = "the character's profile" if only is None else "only this part of the character's profile"
    lines = [f"Draft {what}. Answer with one JSON object and nothing else, in exactly this shape:", shape, ""]
    lines += [f"- {k}: {SCHEMA[k][1]}" for k in keys]
    if name.strip() and only != "name":
        lines.append(f"The character's name is {clean_text(name.strip())}.")
    lines.append("Describe only what the pictures and notes support; invent the rest in keeping with them.")
    return "\n".join(lines)


def draft_request(
    images: Sequence[Picture], notes: str, language: str, only: str | None = None, name: str = ""
) -> ReplyRequest:
    """The request for a draft: the fixed prefix, then the task as the user's next turn."""
    if only is not None and only not in KEYS_FOR:
        raise ValueError(f"{only!r} is not a field the sheet can draft")
    history = (Turn("assistant", READY), Turn("user", draft_task(only, name)))
    sampler = SamplerSettings(temperature=0.7, max_new_tokens=FIELD_REPLY_TOKENS if only else FULL_REPLY_TOKENS)
    return ReplyRequest(draft_prefix(images, notes, language), history, sampler)


class DraftRun:
    """A draft being written: iterate for text chunks; `text` is what has come so far."""

    def __init__(self, stream: ReplyStream, only: str | None) -> None:
        self._stream, self.only, self.text = stream, only, ""

    def __iter__(self) -> Iterator[str]:
        for chunk in self._stream:
            self.text += chunk
            yield chunk

    def draft(self) -> Draft:
        return parse_draft(self.text, self.only)

    def close(self) -> None:
        self._stream.close()


def read_sheet(
    backend: Backend,
    images: Sequence[Picture],
    notes: str,
    language: str,
    *,
    only: str | None = None,
    name: str = "",
    stop: threading.Event | None = None,
    on_progress: OnProgress | None = None,
) -> DraftRun:
    """Start drafting (the backend must be prepared); nothing runs until the run is iterated."""
    request = draft_request(images, notes, language, only, name)
    return DraftRun(backend.stream(request, stop, on_progress), only)


def parse_draft(text: str, only: str | None = None) -> Draft:
    """The profile values in a model's answer, however untidy; what cannot be read comes back as
    `leftover` text (for the notes). `only`: keep just that field."""
    try:
        found = json_repair.loads(text) if text.strip() else None
    except Exception:  # noqa: BLE001 - a repair library meeting the unforeseen; the text still goes to the notes
        found = None
    if isinstance(found, list):  # several objects, or one wrapped in a list: the first object
        found = next((item for item in found if isinstance(item, dict)), None)
    values: dict[str, Any] = {}
    if isinstance(found, dict):
        values = _profile_values({str(k).strip().lower().replace(" ", "_"): v for k, v in found.items()})
    if only is not None:
        values = {k: v for k, v in values.items() if k == only}
    if not any(values.values()):
        return Draft({}, clean_text(text).strip()[:MAX_TEXT])
    return Draft({k: v for k, v in values.items() if v})


def _profile_values(answer: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": _text(answer.get("name"))[:MAX_LINE],
        "description": _text(answer.get("appearance")),
        "scenario": _text(answer.get("scenario")),
        "first_mes": _text(answer.get("greeting")),
        "alternate_greetings": _list(answer.get("alternate_greetings"), MAX_GREETINGS, MAX_TEXT, split=False),
        "tags": list(dict.fromkeys(t.lower() for t in _list(answer.get("tags"), MAX_TAGS, MAX_TAG, split=True))),
    }
    personality, style = _text(answer.get("personality")), _text(answer.get("speaking_style"))
    values["personality"] = "\n\n".join(
        part for part in (personality, f"{STYLE_LABEL}: {style}" if style else "") if part
    )
    return values


def _text(value: Any) -> str:
    """A value as one text: a list's items joined, numbers written out, anything else left out."""
    if isinstance(value, list):
        value = " ".join(_text(v) for v in value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return clean_text(str(value)).strip()[:MAX_TEXT]


def _list(value: Any, most: int, longest: int, *, split: bool) -> list[str]:
    if isinstance(value, str):
        value = split_tags(value) if split else [value]
    if not isinstance(value, list):
        return []
    items = [_text(v)[:longest] for v in value]
    return list(dict.fromkeys(item for item in items if item))[:most]
