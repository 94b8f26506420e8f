"""Tavern character cards (SillyTavern's format): import V1/V2/V3, export V2 + V3.

A card is UTF-8 JSON, base64-encoded in a PNG text chunk: `chara` (V2) and/or `ccv3` (V3, preferred
when both are there), or a bare `.json` file. Import keeps every field: the profile fields map to
`Character` columns, unknown `extensions` keys are kept as they are, and V3-only fields are kept
under our own namespaced extension so an export gives them back. `creator_notes` are stored but
never put into a prompt.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image, PngImagePlugin

from core.errors import UserError
from core.i18n import Text
from core.profile import CARD_LIST_FIELDS as LIST_FIELDS
from core.profile import CARD_TEXT_FIELDS as TEXT_FIELDS
from core.prompts import reply_language_for
from core.text import clean, clean_text

NAMESPACE = "refsheet_chat"  # our key inside `extensions`
V3_ONLY = ("nickname", "creator_notes_multilingual", "source", "group_only_greetings", "assets", "creation_date",
           "modification_date")  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference, as SillyTavern reads them
MAX_CARD_BYTES = 16 * 2**20  # a card's JSON, decoded; real ones are kilobytes
MAX_NAME = 200  # characters; names are indexed, and a database index row has a size limit
MAX_TEXT = 200_000  # characters per text field


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
    """Parse a card from PNG or JSON bytes, or raise `CardError`.

    A PNG's text chunks are read straight from the file, never by decoding its pixels, so a picture
    too large to open (a decompression bomb) still gives up its card, and inflating a compressed
    chunk stops at MAX_CARD_BYTES. JSON is read strictly: NaN and Infinity are not numbers a card
    can carry, and nesting too deep to read is refused."""
    if raw.startswith(PNG_SIGNATURE):
        chunks = png_text_chunks(raw, name)
        payload = next((chunks[k] for k in CARD_KEYWORDS if k in chunks), None)
        if payload is None:
            raise CardError("no_card", name)
        try:
            text = base64.b64decode(payload, validate=False)
            if len(text) > MAX_CARD_BYTES:
                raise CardError("too_large", name)
            document = _parse_json(text.decode("utf-8"), name)
        except (ValueError, UnicodeDecodeError) as exc:  # bad base64 (non-ASCII too), bad UTF-8
            raise CardError("unreadable", name) from exc
        image: bytes | None = raw
    else:
        if len(raw) > MAX_CARD_BYTES:
            raise CardError("too_large", name)
        try:
            document = _parse_json(raw.decode("utf-8-sig"), name, not_card=True)
        except UnicodeDecodeError as exc:
            raise CardError("not_card", name) from exc
        image = None
    if not isinstance(document, dict):
        raise CardError("not_card", name)
    if document.get("spec") in ("chara_card_v2", "chara_card_v3") and isinstance(document.get("data"), dict):
        return Card(document["spec"], dict(document["data"]), image)
    if "name" in document and ("description" in document or "first_mes" in document):  # V1: flat fields
        return Card("chara_card_v2", {k: document.get(k, "") for k in TEXT_FIELDS if k in document}, image)
    raise CardError("not_card", name)


def _parse_json(text: str, name: str, not_card: bool = False) -> Any:
    def no_constant(word: str) -> Any:
        raise ValueError(f"{word} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except RecursionError as exc:
        raise CardError("too_deep", name) from exc
    except ValueError as exc:
        raise CardError("not_card" if not_card else "unreadable", name) from exc


def png_text_chunks(raw: bytes, name: str = "") -> dict[str, str]:
    """The PNG's text chunks (tEXt, zTXt, iTXt) by lower-cased keyword, the first of each keyword
    winning, as SillyTavern reads them; read from the chunk list alone."""
    found: dict[str, str] = {}
    at = len(PNG_SIGNATURE)
    if raw[at + 4 : at + 8] != b"IHDR":  # every PNG opens with its header chunk
        raise CardError("unreadable", name)
    while at + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[at : at + 8])
        data = raw[at + 8 : at + 8 + length]
        if len(data) < length:
            raise CardError("unreadable", name)  # cut short
        at += 12 + length
        if kind == b"IEND":
            break
        if kind not in (b"tEXt", b"zTXt", b"iTXt") or b"\0" not in data:
            continue
        keyword, rest = data.split(b"\0", 1)
        key = keyword.decode("latin-1").lower()
        if key in found:
            continue
        try:
            found[key] = _chunk_text(kind, rest)
        except _TooLarge as exc:
            raise CardError("too_large", name) from exc
        except (zlib.error, ValueError, UnicodeDecodeError):
            continue  # a broken text chunk is as good as none
    return found


def _chunk_text(kind: bytes, rest: bytes) -> str:
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(rest[1:]).decode("latin-1")
    compressed, _method = rest[0], rest[1]  # iTXt: flag, method, language\0, translated keyword\0, text
    _language, _translated, text = rest[2:].split(b"\0", 2)
    return (_inflate(text) if compressed else text).decode("utf-8")


class _TooLarge(Exception):
    """A compressed text chunk that inflates past MAX_CARD_BYTES (a zip bomb in a PNG)."""


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_CARD_BYTES + 1)
    if len(out) > MAX_CARD_BYTES:
        raise _TooLarge
    return out


@dataclass
class CardImport:
    """A card's profile as the app stores it, and what had to be changed or left out, by field."""

    profile: dict[str, Any]
    warnings: list[Text] = field(default_factory=list)


def profile_from_card(card: Card) -> dict[str, Any]:
    """Character fields from a card (every field kept; V3-only fields under our namespace)."""
    return import_card(card).profile


def import_card(card: Card) -> CardImport:
    """The card's fields, each coerced to what the profile takes or left out, saying which and why:
    a list given as text is split (tags at commas) or kept whole (a greeting), a number becomes
    text, a field of the wrong shape is left out; text loses NUL characters and lone surrogates."""
    data = card.data
    warnings: list[Text] = []

    def warn(key: str, name: str, **params: Any) -> None:
        warnings.append(Text(f"card.warning.{key}", {"field": name, **params}))

    profile: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = data.get(name)
        if value is None or value == "":
            profile[name] = ""
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            if not isinstance(value, str):
                warn("made_text", name)
            text = clean_text(str(value))
            limit = MAX_NAME if name == "name" else MAX_TEXT
            if len(text) > limit:
                warn("cut", name, limit=limit)
                text = text[:limit]
            profile[name] = text
        else:
            warn("left_out", name)
            profile[name] = ""
    for name in LIST_FIELDS:
        profile[name] = _as_list(name, data.get(name), warn)
    extensions = data.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        warn("left_out", "extensions")
        extensions = None
    extensions = clean(dict(extensions or {}))
    ours = dict(extensions.get(NAMESPACE) or {}) if isinstance(extensions.get(NAMESPACE), dict) else {}
    v3 = clean({k: data[k] for k in V3_ONLY if k in data})
    if v3:
        ours["v3"] = v3
    if ours:
        extensions[NAMESPACE] = ours
    profile["extensions"] = extensions
    profile["character_book"] = _book(data.get("character_book"), warn)
    if isinstance(ours.get("notes"), str) and ours["notes"]:
        profile["notes"] = clean_text(ours["notes"])[:MAX_TEXT]
    if language := (ours.get("language") if isinstance(ours.get("language"), str) else None) or card_language(data):
        profile["language"] = clean_text(language)[:MAX_NAME]
    return CardImport(profile, warnings)


def _as_list(name: str, value: Any, warn: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        if name == "tags":
            warn("split", name)
            return [clean_text(t.strip()) for t in value.split(",") if t.strip()]
        warn("one_item", name)
        return [clean_text(value)]
    if not isinstance(value, list):
        warn("left_out", name)
        return []
    items = [clean_text(str(v)) for v in value if isinstance(v, str | int | float) and not isinstance(v, bool)]
    if len(items) != len(value):
        warn("some_left_out", name, count=len(value) - len(items))
    return [item[:MAX_TEXT] for item in items if item.strip()]


def _book(value: Any, warn: Any) -> dict[str, Any] | None:
    """A character book as SillyTavern keeps it (an object with `entries`), or nothing."""
    if value is None or value == {}:
        return None
    if isinstance(value, list):
        warn("book_list", "character_book")
        value = {"entries": value}
    if not isinstance(value, dict):
        warn("left_out", "character_book")
        return None
    book = clean(value)
    entries = book.get("entries")
    if not isinstance(entries, list):
        warn("left_out", "character_book")
        return None
    usable = [e for e in entries if isinstance(e, dict) and (e.get("keys") or e.get("constant")) and e.get("content")]
    if len(usable) != len(entries):
        warn("book_entries", "character_book", count=len(entries) - len(usable))
    return book


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
        data["character_book"] = {"extensions": {}, **character.character_book}  # SillyTavern's validator wants it
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
    """Strict JSON (no NaN, no Infinity: SillyTavern's JSON.parse refuses them), base64 of its UTF-8."""
    text = json.dumps(clean(document), ensure_ascii=False, allow_nan=False)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
