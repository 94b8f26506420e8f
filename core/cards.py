"""Tavern character cards (SillyTavern's format): import V1/V2/V3, export V2 + V3.

A card is UTF-8 JSON, base64-encoded in a PNG text chunk: `chara` (V2) and/or `ccv3` (V3, preferred
when both are there), or a bare `.json` file. Import keeps every field: the profile fields map to
`Character` columns, unknown `extensions` keys are kept as they are, and V3-only fields are kept
under our own namespaced extension so an export gives them back. `creator_notes` are stored but
never put into a prompt.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from core.errors import UserError
from core.profile import CARD_LIST_FIELDS as LIST_FIELDS
from core.profile import CARD_TEXT_FIELDS as TEXT_FIELDS
from core.prompts import reply_language_for

NAMESPACE = "refsheet_chat"  # our key inside `extensions`
V3_ONLY = ("nickname", "creator_notes_multilingual", "source", "group_only_greetings", "assets", "creation_date",
           "modification_date")  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CardError(UserError):
    """A file that is not a card we can read; the message names the file."""

    namespace = "card"

    def __init__(self, code: str, name: str = "") -> None:
        self.name = name or "file"
        super().__init__(code, name=self.name)


@dataclass
class Card:
    spec: str  # "chara_card_v2" | "chara_card_v3"
    data: dict[str, Any]
    image: bytes | None = field(default=None, repr=False)  # the card's PNG, to use as the main sheet


def read_card(raw: bytes, name: str = "") -> Card:
    """Parse a card from PNG or JSON bytes, or raise `CardError`."""
    image = None
    if raw.startswith(PNG_SIGNATURE):
        try:
            png = Image.open(io.BytesIO(raw))
            chunks = dict(getattr(png, "text", {}) or {})
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise CardError("unreadable", name) from exc
        payload = chunks.get("ccv3") or chunks.get("chara")
        if payload is None:
            raise CardError("no_card", name)
        try:
            document = json.loads(base64.b64decode(payload).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise CardError("unreadable", name) from exc
        image = raw
    else:
        try:
            document = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CardError("not_card", name) from exc
    if not isinstance(document, dict):
        raise CardError("not_card", name)
    if document.get("spec") in ("chara_card_v2", "chara_card_v3") and isinstance(document.get("data"), dict):
        return Card(document["spec"], dict(document["data"]), image)
    if "name" in document and ("description" in document or "first_mes" in document):  # V1: flat fields
        return Card("chara_card_v2", {k: document.get(k, "") for k in TEXT_FIELDS if k in document}, image)
    raise CardError("not_card", name)


def profile_from_card(card: Card) -> dict[str, Any]:
    """Character fields from a card (every field kept; V3-only fields under our namespace)."""
    data = card.data
    profile: dict[str, Any] = {k: str(data.get(k) or "") for k in TEXT_FIELDS}
    profile.update({k: [str(x) for x in data.get(k) or []] for k in LIST_FIELDS})
    extensions = dict(data.get("extensions") or {})
    ours = dict(extensions.get(NAMESPACE) or {})
    v3 = {k: data[k] for k in V3_ONLY if k in data}
    if v3:
        ours["v3"] = v3
    if ours:
        extensions[NAMESPACE] = ours
    profile["extensions"] = extensions
    profile["character_book"] = data.get("character_book") or None
    if ours.get("notes"):
        profile["notes"] = ours["notes"]
    if language := ours.get("language") or card_language(data):
        profile["language"] = language
    return profile


def card_language(data: dict[str, Any]) -> str | None:
    """The language a card is written in, where it says: V3 keeps creator notes per language tag."""
    notes = data.get("creator_notes_multilingual")
    tags = list(notes) if isinstance(notes, dict) else []
    return next((lang for tag in tags if (lang := reply_language_for(tag))), None)


def card_data(character: Any) -> dict[str, Any]:
    """The V2 `data` object for a character; our notes and language ride in our namespace."""
    extensions = dict(character.extensions or {})
    ours = dict(extensions.get(NAMESPACE) or {})
    ours.update(notes=character.notes, language=character.language)
    extensions[NAMESPACE] = ours
    data: dict[str, Any] = {k: getattr(character, k) or "" for k in TEXT_FIELDS}
    data.update({k: list(getattr(character, k) or []) for k in LIST_FIELDS})
    data["extensions"] = extensions
    if character.character_book:
        data["character_book"] = character.character_book
    return data


def write_card_png(character: Any, sheet_png: bytes) -> bytes:
    """A PNG of the sheet carrying the card twice, as SillyTavern writes it: `chara` (V2) and `ccv3` (V3)."""
    data = card_data(character)
    v2 = {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}
    now = int(datetime.now(UTC).timestamp())
    v3_extra = {"nickname": "", "creator_notes_multilingual": {}, "source": [], "group_only_greetings": [],
                "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
                "creation_date": now, "modification_date": now}  # fmt: skip
    v3_extra.update(data["extensions"].get(NAMESPACE, {}).get("v3", {}))
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {**data, **v3_extra}}
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", _b64(v2))
    info.add_text("ccv3", _b64(v3))
    buf = io.BytesIO()
    Image.open(io.BytesIO(sheet_png)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _b64(document: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(document, ensure_ascii=False).encode("utf-8")).decode("ascii")
