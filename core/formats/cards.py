"""Tavern character cards (SillyTavern's format): import V1/V2/V3, export V2 + V3.

A card is UTF-8 JSON, base64-encoded in a PNG text chunk: `chara` (V2) and/or `ccv3` (V3, preferred
when both are there), or a bare `.json` file (a CHARX zip: `core.formats.charx`). Import keeps every field:
the profile fields map to `Character` columns, unknown `extensions` keys are kept as they are, and
V3-only fields are kept under our own namespaced extension so an export gives them back. `creator_notes`
are stored but never put into a prompt.

Pictures travel as V3 `assets`: the main sheet is the `icon` named `main` (in a PNG, the PNG itself:
`ccdefault:`), every other reference image an asset of our own type, `x_refsheet_reference`, in order.
Assets of other apps are kept and written back; our own are never stored twice.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from PIL import Image, PngImagePlugin

from core.base.errors import UserError
from core.base.i18n import Text
from core.base.languages import reply_language_for
from core.base.profile import CARD_LIST_FIELDS as LIST_FIELDS
from core.base.profile import CARD_TEXT_FIELDS as TEXT_FIELDS
from core.base.profile import MAX_LINE, MAX_TEXT, split_tags
from core.base.text import JSONTooDeep, clean, clean_text, dumps, loads

NAMESPACE = "refsheet_chat"  # our key inside `extensions`
V3_ONLY = ("nickname", "creator_notes_multilingual", "source", "group_only_greetings", "assets", "creation_date",
           "modification_date")  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference, as SillyTavern reads them
MAX_CARD_BYTES = 16 * 2**20  # a card's JSON, decoded; real ones are kilobytes
REFERENCE_TYPE = "x_refsheet_reference"  # our asset type: an extra reference image, in order
EMBEDDED = ("embeded://", "embedded://")  # a CHARX member; the spec's spelling first, the fixed one read too
MAX_KEPT_ASSETS = 8 * 2**20  # another app's CHARX files kept (inlined) with a character, in all
MAIN_ICON = {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}  # in a PNG: the PNG itself
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")  # old readers


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
    files: Mapping[str, bytes] = field(default_factory=dict, repr=False)  # a CHARX's members, for `embeded://`


@dataclass(frozen=True)
class CardPicture:
    """A reference image a card carries, as it came (not validated yet): its name and bytes."""

    name: str
    data: bytes = field(repr=False)


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
            document = parse_card_json(text.decode("utf-8"), name)
        except (ValueError, UnicodeDecodeError) as exc:  # bad base64 (non-ASCII too), bad UTF-8
            raise CardError("unreadable", name) from exc
        image: bytes | None = raw
    else:
        if len(raw) > MAX_CARD_BYTES:
            raise CardError("too_large", name)
        try:
            document = parse_card_json(raw.decode("utf-8-sig"), name, not_card=True)
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


def parse_card_json(text: str, name: str, not_card: bool = False) -> Any:
    try:
        return loads(text)
    except JSONTooDeep as exc:
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
    """A card's profile as the app stores it, its pictures, and what had to be changed or left out."""

    profile: dict[str, Any]
    warnings: list[Text] = field(default_factory=list)
    main: bytes | None = field(default=None, repr=False)  # the main sheet: a PNG card's picture, or its main icon
    pictures: list[CardPicture] = field(default_factory=list)  # the extra reference images, in order


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
            limit = MAX_LINE if name == "name" else MAX_TEXT
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
    main, pictures = card.image, []
    if "assets" in data:
        icon, pictures, v3["assets"] = _assets(data["assets"], card.files, warn, warnings)
        main = main if main is not None else icon
        if v3["assets"] is None:
            del v3["assets"]
    if v3:
        ours["v3"] = v3
    if ours:
        extensions[NAMESPACE] = ours
    profile["extensions"] = extensions
    profile["character_book"] = _book(data.get("character_book"), warn)
    if isinstance(ours.get("notes"), str) and ours["notes"]:
        profile["notes"] = clean_text(ours["notes"])[:MAX_TEXT]
    if language := (ours.get("language") if isinstance(ours.get("language"), str) else None) or card_language(data):
        profile["language"] = clean_text(language)[:MAX_LINE]
    return CardImport(profile, warnings, main, pictures)


def _assets(
    value: Any, files: Mapping[str, bytes], warn: Any, warnings: list[Text]
) -> tuple[bytes | None, list[CardPicture], list[dict[str, Any]] | None]:
    """A V3 asset list read: the main icon's picture (where the card holds it), our reference images in
    order, and every other asset to keep (another app's CHARX file inlined as a data URL, within
    MAX_KEPT_ASSETS). Reference images that cannot be read, and assets that cannot be kept, are
    named in a warning; nothing here fails the import."""
    if not isinstance(value, list):
        warn("left_out", "assets")
        return None, [], None
    entries = [clean(a) for a in value if isinstance(a, dict) and isinstance(a.get("uri", ""), str)]
    if len(entries) != len(value):
        warn("some_left_out", "assets", count=len(value) - len(entries))
    icons = [a for a in entries if a.get("type") == "icon"]
    main_icon = next((a for a in icons if a.get("name") == "main"), icons[0] if icons else None)
    main = asset_bytes(main_icon.get("uri", ""), files) if main_icon else None
    pictures: list[CardPicture] = []
    kept: list[dict[str, Any]] = []
    dropped: list[str] = []
    budget = MAX_KEPT_ASSETS
    for asset in entries:
        uri, name = str(asset.get("uri", "")), str(asset.get("name", ""))
        if asset is main_icon:
            continue  # the main sheet: stored as the character's picture, written anew on export
        if asset.get("type") == REFERENCE_TYPE:
            data = asset_bytes(uri, files)
            ext = str(asset.get("ext") or "png")
            label = f"{name or 'image'}.{ext}"
            if data:
                pictures.append(CardPicture(label, data))
            else:
                warnings.append(Text("card.warning.picture_missing", {"picture": label[:200]}))
            continue
        if uri.startswith(EMBEDDED) and files:  # another app's file in this CHARX: kept inside its entry
            data = asset_bytes(uri, files)
            if data is None or len(data) > budget:
                dropped.append(name or uri)
                continue
            budget -= len(data)
            asset = {**asset, "uri": data_url(data, str(asset.get("ext", "")))}
        kept.append(asset)
    if dropped:
        warnings.append(Text("card.warning.assets_dropped", {"count": len(dropped), "names": ", ".join(dropped)[:300]}))
    return main, pictures, kept


def asset_bytes(uri: str, files: Mapping[str, bytes]) -> bytes | None:
    """The bytes an asset URI holds: a base64 data URL, or (in a CHARX) `embeded://path`; else None."""
    if uri.startswith("data:") and "," in uri:
        header, payload = uri[5:].split(",", 1)
        if not header.endswith(";base64"):
            return None
        try:
            return base64.b64decode("".join(payload.split()), validate=True) or None
        except ValueError:
            return None
    prefix = next((p for p in EMBEDDED if uri.lower().startswith(p)), None)
    return files.get(uri[len(prefix) :]) if prefix else None


def data_url(data: bytes, ext: str = "png") -> str:
    mime = mimetypes.types_map.get(f".{ext.lower()}", "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _as_list(name: str, value: Any, warn: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        if name == "tags":
            warn("split", name)
            return split_tags(clean_text(value))
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
    """The V2 `data` object for a character; our notes and language ride in our namespace (V3-only
    fields too, but not the assets: those ride in the V3 card alone)."""
    extensions = dict(character.extensions or {})
    ours = dict(extensions.get(NAMESPACE) or {})
    ours.update(notes=character.notes, language=character.language)
    if isinstance(ours.get("v3"), dict) and "assets" in ours["v3"]:
        ours["v3"] = {k: v for k, v in ours["v3"].items() if k != "assets"}
    extensions[NAMESPACE] = ours
    data: dict[str, Any] = {k: getattr(character, k) or "" for k in TEXT_FIELDS}
    data.update({k: list(getattr(character, k) or []) for k in LIST_FIELDS})
    data["extensions"] = extensions
    if character.character_book:
        data["character_book"] = {"extensions": {}, **character.character_book}  # SillyTavern's validator wants it
    return data


def reference_asset(name: str, uri: str) -> dict[str, Any]:
    """An extra reference image as a V3 asset of our type: its original name (without extension) and URI."""
    stem = PurePosixPath(name).stem if "." in name.lstrip(".") else name
    return {"type": REFERENCE_TYPE, "uri": uri, "name": stem or "image", "ext": "png"}


def kept_assets(character: Any) -> list[dict[str, Any]]:
    """Another app's assets kept from an imported card (never a main icon or one of ours: those are
    written anew from the character's images)."""
    ours = (character.extensions or {}).get(NAMESPACE)
    stored = ours.get("v3", {}).get("assets") if isinstance(ours, dict) and isinstance(ours.get("v3"), dict) else None
    return [
        dict(a)
        for a in stored or []
        if isinstance(a, dict)
        and a.get("type") != REFERENCE_TYPE
        and not (a.get("type") == "icon" and a.get("name") == "main")
    ]


def card_documents(character: Any, assets: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The V2 and V3 card documents, each with the V1 fields at its top for old readers; `assets`
    (the main icon, our references and the kept ones, in order) go into the V3 card alone."""
    data = card_data(character)
    v1 = {k: data[k] for k in V1_FIELDS}
    v2 = {**v1, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}
    now = int(datetime.now(UTC).timestamp())
    v3_extra = {"nickname": "", "creator_notes_multilingual": {}, "source": [], "group_only_greetings": [],
                "creation_date": now}  # fmt: skip
    stored = data["extensions"][NAMESPACE].get("v3")
    v3_extra.update({k: v for k, v in stored.items() if k in V3_ONLY} if isinstance(stored, dict) else {})
    v3_extra.update(assets=list(assets), modification_date=now)
    v3 = {**v1, "spec": "chara_card_v3", "spec_version": "3.0", "data": {**data, **v3_extra}}
    return v2, v3


def write_card_png(character: Any, sheet_png: bytes, extras: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """A PNG of the main sheet carrying the card twice, as SillyTavern writes it: `chara` (V2) then
    `ccv3` (V3), both `tEXt`. Each extra reference image `(original name, PNG)` rides in the V3
    assets as a data URL; a card past MAX_CARD_BYTES (which readers refuse) is refused: CHARX carries it."""
    references = [reference_asset(name, data_url(data)) for name, data in extras]
    v2, v3 = card_documents(character, [MAIN_ICON, *references, *kept_assets(character)])
    chara, ccv3 = _b64(v2), _b64(v3)
    if max(len(chara), len(ccv3)) // 4 * 3 > MAX_CARD_BYTES:
        raise CardError("export_too_large", character.name)
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", chara)
    info.add_text("ccv3", ccv3)
    buf = io.BytesIO()
    Image.open(io.BytesIO(sheet_png)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_card_size(character: Any, extra_sizes: Sequence[int]) -> int:
    """An upper bound on the V3 card's decoded JSON for extra images of these sizes, without building it:
    whether a PNG card would fit under MAX_CARD_BYTES."""
    _, v3 = card_documents(character, [MAIN_ICON, *kept_assets(character)])
    base = len(dumps(v3).encode("utf-8"))
    return base + sum(4 * ((size + 2) // 3) + 1_000 for size in extra_sizes)  # base64, and the entry around it


def _b64(document: dict[str, Any]) -> str:
    """Strict JSON (no NaN, no Infinity: SillyTavern's JSON.parse refuses them), base64 of its UTF-8."""
    text = dumps(document)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
