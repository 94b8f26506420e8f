"""Tavern character cards (SillyTavern's format): import V1/V2/V3, export V2 + V3.

A card is UTF-8 JSON, base64-encoded in a PNG text chunk: `chara` (V2) and/or `ccv3` (V3, preferred
when both are there), or a bare `.json` file (a CHARX zip: `core.formats.charx`). Import keeps every field:
the profile fields map to `Character` columns, unknown `extensions` keys are kept as they are, and
other apps' V3-only fields (nickname, sources, their assets…) are kept under our own namespaced
extension so an export gives them back as V3 fields. `creator_notes` are stored but never put into a
prompt.

An export stands on its own in an app that knows nothing of our extension (and cannot see the
sheet): its `description` is the character's description, or a line saying the looks are in the
pictures when there is none, then the notes, then the reply language (see `card_description`), so
SillyTavern and RisuAI put all of it into their prompts. Our extension says how that description was
made, so importing our own card gives back each field exactly, the notes once.

Pictures travel as V3 `assets`: the main sheet is the `icon` named `main` (in a PNG, the PNG itself:
`ccdefault:`), every other reference image an asset of our own type, `x_refsheet_reference`, in order.
Assets of other apps are kept and written back; our own are never stored twice. RisuAI's PNG cards
keep extra files in text chunks `chara-ext-asset_:N`, named `__asset:N` in the URIs: they are read,
kept inline (a data URL) like another app's CHARX file, and a URI whose bytes a file does not hold is
a warning naming it, never written into an export. Our PNG writes them back the same way, and lists a
RisuAI V2 card's pictures as V3 assets too, as RisuAI reads our `ccv3` (see `export_assets`).
"""

from __future__ import annotations

import base64
import io
import mimetypes
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from PIL import Image, PngImagePlugin

from core.base.errors import UserError
from core.base.i18n import Text
from core.base.languages import DEFAULT_LANGUAGE, language_name, reply_language_for
from core.base.profile import CARD_LIST_FIELDS as LIST_FIELDS
from core.base.profile import CARD_TEXT_FIELDS as TEXT_FIELDS
from core.base.profile import MAX_LINE, MAX_TEXT, split_tags
from core.base.text import JSONTooDeep, clean, clean_text, dumps, loads
from storage.tables import as_utc

NAMESPACE = "refsheet_chat"  # our key inside `extensions`
V3_KEPT = {"nickname": str, "creator_notes_multilingual": dict, "source": list, "group_only_greetings": list}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference, as SillyTavern reads them
MAX_CARD_BYTES = 16 * 2**20  # a card's JSON, decoded; real ones are kilobytes
MAX_INFLATED = 2 * MAX_CARD_BYTES  # every compressed text chunk read from one PNG, inflated, together
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
REFERENCE_TYPE = "x_refsheet_reference"  # our asset type: an extra reference image, in order
EMBEDDED = ("embeded://", "embedded://")  # a CHARX member; the spec's spelling first, the fixed one read too
MAX_KEPT_ASSETS = 8 * 2**20  # another app's CHARX files kept (inlined) with a character, in all
MAIN_ICON = {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}  # in a PNG: the PNG itself
CARD_DATES = ("creation_date", "modification_date")  # V3, Unix seconds: kept from an imported card
V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")  # old readers
ASSET_CHUNK = "chara-ext-asset_"  # RisuAI: a PNG card's extra files, as `__asset:N` in its URIs
RISU_ASSET = "__asset:"
LEGACY_CHUNKS = ("risuai",)  # an older RisuAI's own chunk of data: not read, named in a warning
CARRIED_URIS = ("data:", "http://", "https://")  # a kept asset: bytes it holds, or a link
MAX_ASSETS = 2_000  # assets read from one card (a CHARX holds 2,000 files at most)
# What an exported description says where the profile has no description, and of the reply language.
APPEARANCE_LINE = "{{char}} looks as the card's picture and its other reference images show."
LANGUAGE_LINE = "{{char}} always speaks {language}."


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
    embedded: Mapping[str, str] = field(default_factory=dict, repr=False)  # RisuAI's `__asset:N` chunks (base64)
    left_out: Mapping[str, int] = field(default_factory=dict)  # other data chunks not read: name -> bytes


@dataclass(frozen=True)
class CardPicture:
    """A reference image a card carries, as it came (not validated yet): its name and bytes."""

    name: str
    data: bytes = field(repr=False)


def read_card(raw: bytes, name: str = "") -> Card:
    """Parse a card from PNG or JSON bytes, or raise `CardError`.

    A PNG's text chunks are read straight from the file, never by decoding its pixels, so a picture
    too large to open (a decompression bomb) still gives up its card, and inflating compressed
    chunks stops at MAX_CARD_BYTES each and MAX_INFLATED in all (`png_text_chunks`). JSON is read
    strictly: NaN and Infinity are not numbers a card can carry, and nesting too deep to read is refused."""
    embedded: dict[str, str] = {}
    left_out: dict[str, int] = {}
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
        # RisuAI's own reading: `chara-ext-asset_:1` (or `chara-ext-asset_1`) is what `__asset:1` names
        embedded = {k[len(ASSET_CHUNK) :].removeprefix(":"): v for k, v in chunks.items() if k.startswith(ASSET_CHUNK)}
        left_out = png_chunk_sizes(raw, LEGACY_CHUNKS, name)
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
        return Card(document["spec"], dict(document["data"]), image, embedded=embedded, left_out=left_out)
    if "name" in document and ("description" in document or "first_mes" in document):  # V1: flat fields
        data = {k: document.get(k, "") for k in TEXT_FIELDS if k in document}
        return Card("chara_card_v2", data, image, embedded=embedded, left_out=left_out)
    raise CardError("not_card", name)


def parse_card_json(text: str, name: str, not_card: bool = False) -> Any:
    try:
        return loads(text)
    except JSONTooDeep as exc:
        raise CardError("too_deep", name) from exc
    except ValueError as exc:
        raise CardError("not_card" if not_card else "unreadable", name) from exc


def png_text_chunks(raw: bytes, name: str = "") -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) a card is read from, by lower-cased keyword: `ccv3` and
    `chara`, the first of each winning as SillyTavern reads them, and RisuAI's `chara-ext-asset_:N`,
    the last of each winning as RisuAI reads them. No other chunk is decoded, and compressed ones
    inflate to MAX_INFLATED together at most: a small PNG of many zip bombs is refused
    (`too_much_text`) before it takes the memory."""
    found: dict[str, str] = {}
    budget = MAX_INFLATED
    for kind, key, rest in _text_chunks(raw, name):
        asset = key.startswith(ASSET_CHUNK)
        if not (asset or key in CARD_KEYWORDS) or (key in found and not asset):
            continue
        try:
            text, inflated = _chunk_text(kind, rest, budget)
        except _TooLarge as exc:
            raise CardError(exc.code, name) from exc
        except (zlib.error, ValueError, UnicodeDecodeError):
            continue  # a broken text chunk is as good as none
        budget -= inflated
        found.pop(key, None)  # the last of an asset's chunks is the one RisuAI keeps
        found[key] = text
    return found


def png_chunk_sizes(raw: bytes, keywords: Sequence[str], name: str = "") -> dict[str, int]:
    """The size in the file of the text chunks named `keywords` (never decoded): data we do not read,
    to name in a warning."""
    sizes: dict[str, int] = {}
    for _kind, key, rest in _text_chunks(raw, name):
        if key in keywords:
            sizes[key] = sizes.get(key, 0) + len(rest)
    return sizes


def _text_chunks(raw: bytes, name: str) -> Iterator[tuple[bytes, str, bytes]]:
    """Each text chunk up to IEND as (kind, lower-cased keyword, what follows the keyword), read from
    the chunk list alone; a PNG whose chunk list is cut short is `unreadable`."""
    at = len(PNG_SIGNATURE)
    if raw[at + 4 : at + 8] != b"IHDR":  # every PNG opens with its header chunk
        raise CardError("unreadable", name)
    while at + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[at : at + 8])
        if at + 8 + length > len(raw):
            raise CardError("unreadable", name)  # cut short
        start, at = at + 8, at + 12 + length
        if kind == b"IEND":
            return
        if kind in TEXT_CHUNKS:
            keyword_end = raw.find(b"\0", start, start + length)
            if keyword_end >= 0:
                yield kind, raw[start:keyword_end].decode("latin-1").lower(), raw[keyword_end + 1 : start + length]


def picture_only(raw: bytes) -> bytes:
    """The card's PNG without its text chunks: the picture alone. A card's data can be megabytes
    (RisuAI's assets, a compressed card past Pillow's 1 MB limit for one text chunk), which image
    readers refuse, though the picture itself is fine. A PNG whose chunks cannot be followed is given
    back as it is, for the image check to judge."""
    out, at = [raw[: len(PNG_SIGNATURE)]], len(PNG_SIGNATURE)
    while at + 8 <= len(raw):
        (length,) = struct.unpack(">I", raw[at : at + 4])
        end = at + 12 + length
        if end > len(raw):
            return raw
        if raw[at + 4 : at + 8] not in TEXT_CHUNKS:
            out.append(raw[at:end])
        if raw[at + 4 : at + 8] == b"IEND":
            return b"".join(out)
        at = end
    return raw


def _chunk_text(kind: bytes, rest: bytes, budget: int) -> tuple[str, int]:
    """A text chunk's text and how many bytes inflating it took (within `budget`)."""
    if kind == b"tEXt":
        return rest.decode("latin-1"), 0
    if kind == b"zTXt":
        data = _inflate(rest[1:], budget)
        return data.decode("latin-1"), len(data)
    compressed, _method = rest[0], rest[1]  # iTXt: flag, method, language\0, translated keyword\0, text
    _language, _translated, text = rest[2:].split(b"\0", 2)
    data = _inflate(text, budget) if compressed else text
    return data.decode("utf-8"), len(data) if compressed else 0


class _TooLarge(Exception):
    """A compressed text chunk that inflates past MAX_CARD_BYTES (`too_large`: a zip bomb in a PNG), or
    past what is left of MAX_INFLATED for the whole file (`too_much_text`: many of them)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _inflate(data: bytes, budget: int) -> bytes:
    limit = min(MAX_CARD_BYTES, budget)
    out = zlib.decompressobj().decompress(data, limit + 1)
    if len(out) > limit:
        raise _TooLarge("too_large" if limit == MAX_CARD_BYTES else "too_much_text")
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
    text, a field of the wrong shape is left out; text loses NUL characters and lone surrogates.
    Our own card's description is split from the notes before any field is cut, so both come back."""
    data = dict(card.data)
    warnings: list[Text] = []

    def warn(key: str, name: str, **params: Any) -> None:
        warnings.append(Text(f"card.warning.{key}", {"field": name, **params}))

    extensions = data.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        warn("left_out", "extensions")
        extensions = None
    extensions = clean(dict(extensions or {}))
    ours = extensions.pop(NAMESPACE, None)
    ours = ours if isinstance(ours, dict) else {}
    notes = clean_text(ours["notes"]) if isinstance(ours.get("notes"), str) else None
    language = ours.get("language") if isinstance(ours.get("language"), str) else None
    language = clean_text(language or card_language(data) or "")[:MAX_LINE]
    changed = False
    if isinstance(ours.get("composed"), dict) and notes is not None and isinstance(data.get("description"), str):
        appearance_line = ours["composed"].get("appearance_line") is True  # our own card's description
        original = split_description(clean_text(data["description"]), notes, language, appearance_line)
        changed = original is None  # changed in another app: the notes are in it now
        data["description"] = data["description"] if original is None else original
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
    main = picture_only(card.image) if card.image is not None else None
    kept = _Kept(card.files, card.embedded, main)
    pictures: list[CardPicture] = []
    # V3 fields of other apps: kept (ours) to be written back; an older export of ours stashed a copy
    # of its V3 fields in our extension, read only from a V2 card (a V3 card has its own).
    stale = ours.get("v3") if isinstance(ours.get("v3"), dict) and card.spec != "chara_card_v3" else {}
    fields = clean({**stale, **{k: data[k] for k in V3_KEPT if k in data}})
    v3 = {k: v for k, v in fields.items() if isinstance(v, V3_KEPT.get(k, ())) and v}
    if isinstance(extensions.get("risuai"), dict):
        extensions["risuai"] = _risu_extension(extensions["risuai"], kept)
    if "assets" in data:
        mirrored = _risu_files(extensions.get("risuai"))  # our exports list them again as V3 assets
        icon, pictures, assets = _assets(data["assets"], kept, warn, warnings, mirrored)
        main = icon if icon is not None else main  # RisuAI's main picture is its main icon's
        if assets:
            v3["assets"] = assets
    warnings += kept.warnings()
    warnings += [Text("card.warning.chunk_left_out", {"chunk": k, "size_mb": _mb(n)}) for k, n in card.left_out.items()]
    if kept_here := {k: v for k, v in (("v3", v3), ("dates", _card_dates(data, warn))) if v}:
        extensions[NAMESPACE] = kept_here  # to be written back: other apps' V3 fields, the card's dates
    profile["extensions"] = extensions
    profile["character_book"] = _book(data.get("character_book"), warn)
    if language:
        profile["language"] = language
    if notes is not None:
        profile["notes"] = notes[:MAX_TEXT]
    if changed and len(clean_text(data["description"])) > MAX_TEXT:  # cut: the notes in it may be lost, so kept
        warnings.append(Text("card.warning.description_changed_cut", {"limit": MAX_TEXT}))
    elif changed:  # kept as it is now, with the notes in it: once
        profile["notes"] = ""
        warnings.append(Text("card.warning.description_changed"))
    return CardImport(profile, warnings, main, pictures)


def _card_dates(data: Mapping[str, Any], warn: Any) -> dict[str, int]:
    """A V3 card's `creation_date` and `modification_date` (Unix seconds), kept to be written back."""
    dates = {}
    for key in CARD_DATES:
        value = data.get(key)
        if value is None:
            continue
        if (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and 0 <= value < 2**53
            and value == int(value)
        ):
            dates[key] = int(value)
        else:
            warn("left_out", key)
    return dates


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f}"


class _Kept:
    """Another app's files that a card holds outside its JSON (a CHARX's members, RisuAI's PNG chunks,
    a PNG card's own picture as `ccdefault:`), brought inline to be kept with the character:
    MAX_KEPT_ASSETS in all. Each chunk is decoded once however many assets name it, and one larger
    than what is left is never decoded. What cannot be brought (not in the file, or past the limit)
    is named in one warning."""

    def __init__(self, files: Mapping[str, bytes], embedded: Mapping[str, str], image: bytes | None = None) -> None:
        self.files, self.embedded, self.image = files, embedded, image
        self.budget = MAX_KEPT_ASSETS
        self.dropped: list[str] = []
        self.decoded: dict[str, bytes | None] = {}

    def bytes_of(self, uri: str) -> bytes | None:
        if uri == "ccdefault:":  # in a PNG, the PNG's own picture (RisuAI's reading); in a CHARX, nothing
            return self.image
        if uri not in self.decoded:
            self.decoded[uri] = asset_bytes(uri, self.files, self.embedded)
        return self.decoded[uri]

    def size_of(self, uri: str) -> int:
        """At least the size of what a chunk not decoded yet holds (base64: 3 bytes in 4 characters)."""
        chunk = self.embedded.get(uri[len(RISU_ASSET) :].lower()) if uri.startswith(RISU_ASSET) else None
        if not chunk or uri in self.decoded:
            return 0
        return (len(chunk) - sum(chunk.count(space) for space in " \t\r\n")) * 3 // 4 - 2

    def take(self, uri: str, name: str) -> bytes | None:
        """The bytes a URI names, counted against the limit; None (and named) when it cannot be kept."""
        data = None if self.size_of(uri) > self.budget else self.bytes_of(uri)
        if data is None or len(data) > self.budget:
            self.dropped.append(name or uri)
            return None
        self.budget -= len(data)
        return data

    def warnings(self) -> list[Text]:
        if not self.dropped:
            return []
        names = ", ".join(self.dropped[:100])[:300]
        return [Text("card.warning.assets_dropped", {"count": len(self.dropped), "names": names})]


def _assets(
    value: Any, kept: _Kept, warn: Any, warnings: list[Text], mirrored: Sequence[KeptFile] = ()
) -> tuple[bytes | None, list[CardPicture], list[dict[str, Any]]]:
    """A V3 asset list read: the main icon's picture (where the card holds it), our reference images in
    order, and every other asset to keep: one whose bytes the file holds elsewhere (a CHARX member,
    RisuAI's `__asset:N` chunk, the PNG itself as `ccdefault:`) is brought inline as a data URL, one
    that names bytes the file does not hold is left out. An asset that is one of `mirrored` (RisuAI's
    V2 pictures, which our exports list again as V3 assets) is kept once, in RisuAI's extension. Reference
    images that cannot be read, and assets that cannot be kept, are named in a warning; nothing here
    fails the import. Past MAX_ASSETS, the rest are left out, counted."""
    if not isinstance(value, list):
        warn("left_out", "assets")
        return None, [], []
    if len(value) > MAX_ASSETS:
        warn("too_many", "assets", count=len(value), limit=MAX_ASSETS)
        value = value[:MAX_ASSETS]
    entries = [clean(a) for a in value if isinstance(a, dict) and isinstance(a.get("uri", ""), str)]
    if len(entries) != len(value):
        warn("some_left_out", "assets", count=len(value) - len(entries))
    icons = [a for a in entries if a.get("type") == "icon"]
    main_icon = next((a for a in icons if a.get("name") == "main"), icons[0] if icons else None)
    main = kept.bytes_of(main_icon.get("uri", "")) if main_icon else None
    pictures: list[CardPicture] = []
    others: list[dict[str, Any]] = []
    mine: dict[tuple[str, str, str], list[bytes]] = {}
    for file in mirrored:
        mine.setdefault((file.type, file.name, file.ext), []).append(file.data)
    for asset in entries:
        uri, name = str(asset.get("uri", "")), str(asset.get("name", ""))
        if asset is main_icon:
            continue  # the main sheet: stored as the character's picture, written anew on export
        if asset.get("type") == REFERENCE_TYPE:
            data = kept.bytes_of(uri)
            ext = str(asset.get("ext") or "png")
            label = f"{name or 'image'}.{ext}"
            if data:
                pictures.append(CardPicture(label, data))
            else:
                warnings.append(Text("card.warning.picture_missing", {"picture": label[:200]}))
            continue
        key = (str(asset.get("type", "")), name, str(asset.get("ext", "")))
        if key in mine and kept.bytes_of(uri) in mine[key]:
            continue  # RisuAI's V2 picture, which our export lists again: kept once, in its extension
        if not uri.lower().startswith(CARRIED_URIS):  # held elsewhere in the file (or nowhere): inline it
            data = kept.take(uri, name)
            if data is None:
                continue
            asset = {**asset, "uri": data_url(data, str(asset.get("ext", "")))}
        others.append(asset)
    return main, pictures, others


def _risu_extension(risu: dict[str, Any], kept: _Kept) -> dict[str, Any]:
    """RisuAI's own V2 extension: its emotion images and other assets (`[name, base64 or "__asset:N"]`)
    and voice files (`vits`), each `__asset:N` brought inline as the base64 RisuAI (and SillyTavern's
    sprite import) reads there; one the file does not hold is left out, named."""
    risu = dict(risu)
    for key in ("emotions", "additionalAssets"):
        if isinstance(risu.get(key), list):
            entries = []
            for entry in risu[key]:
                if isinstance(entry, list) and len(entry) >= 2 and str(entry[1]).startswith(RISU_ASSET):
                    data = kept.take(str(entry[1]), str(entry[0]))
                    if data is None:
                        continue
                    entry = [entry[0], base64.b64encode(data).decode("ascii"), *entry[2:]]
                entries.append(entry)
            risu[key] = entries
    if isinstance(risu.get("vits"), dict):
        vits = {}
        for name, value in risu["vits"].items():
            if str(value).startswith(RISU_ASSET):
                if (data := kept.take(str(value), name)) is None:
                    continue
                value = base64.b64encode(data).decode("ascii")
            vits[name] = value
        risu["vits"] = vits
    return risu


def asset_bytes(uri: str, files: Mapping[str, bytes], embedded: Mapping[str, str] | None = None) -> bytes | None:
    """The bytes an asset URI holds: a base64 data URL, (in a CHARX) `embeded://path`, or (in a RisuAI
    PNG) `__asset:N`, a text chunk of base64; else None."""
    if uri.startswith("data:") and "," in uri:
        header, payload = uri[5:].split(",", 1)
        if not header.endswith(";base64"):
            return None
        try:
            return base64.b64decode("".join(payload.split()), validate=True) or None
        except ValueError:
            return None
    if uri.startswith(RISU_ASSET):
        chunk = (embedded or {}).get(uri[len(RISU_ASSET) :].lower())
        if not chunk:
            return None
        try:
            return base64.b64decode("".join(chunk.split()), validate=True) or None
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


# -- writing ----------------------------------------------------------------------------------------
def card_description(description: str, notes: str, language: str, appearance_line: bool | None = None) -> str:
    """The description an exported card carries, what every app puts into its prompt: the character's
    description (or, without one, a line saying its looks are in the pictures), then the notes, then
    the reply language (where it is not English: the spec has no field for it)."""
    head = APPEARANCE_LINE if (not description if appearance_line is None else appearance_line) else description
    return head + _tail(notes, language)


def _tail(notes: str, language: str) -> str:
    other = language not in ("", DEFAULT_LANGUAGE)
    speaks = LANGUAGE_LINE.replace("{language}", language_name(language)) if other else ""
    return "".join(f"\n\n{part}" for part in (notes, speaks) if part)


def split_description(text: str, notes: str, language: str, appearance_line: bool) -> str | None:
    """The description before `card_description` added to it, or None when `text` is not what it
    wrote (changed in another app since)."""
    original = "" if appearance_line else text[: len(text) - len(_tail(notes, language))]
    return original if card_description(original, notes, language, appearance_line) == text else None


def card_data(character: Any) -> dict[str, Any]:
    """The V2 `data` object for a character: its description made to stand on its own (see
    `card_description`), and in our namespace the notes, the reply language and how the description
    was made, so our import gives each back. Other apps' V3 fields ride in the V3 card alone."""
    extensions, _ = carried_extensions(character)
    extensions.pop(NAMESPACE, None)
    description = character.description or ""
    extensions[NAMESPACE] = {
        "notes": character.notes or "",
        "language": character.language or "",
        "composed": {"appearance_line": not description},
    }
    data: dict[str, Any] = {k: getattr(character, k) or "" for k in TEXT_FIELDS}
    data["description"] = card_description(description, character.notes or "", character.language or "")
    data.update({k: list(getattr(character, k) or []) for k in LIST_FIELDS})
    data["extensions"] = extensions
    if character.character_book:
        data["character_book"] = {"extensions": {}, **character.character_book}  # SillyTavern's validator wants it
    return data


def carried_extensions(character: Any) -> tuple[dict[str, Any], list[str]]:
    """The character's extensions as an export writes them, and the names of what could not be
    written: an entry of RisuAI's extension naming an `__asset:N` the character does not hold (one
    imported before those were read) is left out, never written dangling."""
    extensions = dict(character.extensions or {})
    risu = extensions.get("risuai")
    dropped: list[str] = []
    if isinstance(risu, dict):
        risu = dict(risu)
        for key in ("emotions", "additionalAssets"):
            if isinstance(risu.get(key), list):
                bad = [e for e in risu[key] if isinstance(e, list) and len(e) > 1 and str(e[1]).startswith(RISU_ASSET)]
                dropped += [str(e[0]) for e in bad]
                risu[key] = [e for e in risu[key] if not any(e is b for b in bad)]
        if isinstance(risu.get("vits"), dict):
            dropped += [k for k, v in risu["vits"].items() if str(v).startswith(RISU_ASSET)]
            risu["vits"] = {k: v for k, v in risu["vits"].items() if not str(v).startswith(RISU_ASSET)}
        extensions["risuai"] = risu
    return extensions, dropped


def reference_asset(name: str, uri: str) -> dict[str, Any]:
    """An extra reference image as a V3 asset of our type: its original name (without extension) and URI."""
    stem = PurePosixPath(name).stem if "." in name.lstrip(".") else name
    return {"type": REFERENCE_TYPE, "uri": uri, "name": stem or "image", "ext": "png"}


def _stored_v3(character: Any) -> dict[str, Any]:
    ours = (character.extensions or {}).get(NAMESPACE)
    return ours["v3"] if isinstance(ours, dict) and isinstance(ours.get("v3"), dict) else {}


def _other_assets(character: Any) -> list[dict[str, Any]]:
    """Another app's assets kept from an imported card (never a main icon or one of ours: those are
    written anew from the character's images)."""
    stored = _stored_v3(character).get("assets")
    return [
        dict(a)
        for a in (stored if isinstance(stored, list) else [])
        if isinstance(a, dict)
        and a.get("type") != REFERENCE_TYPE
        and not (a.get("type") == "icon" and a.get("name") == "main")
    ]


def kept_assets(character: Any) -> list[dict[str, Any]]:
    """Another app's assets an export writes back: those whose bytes the character holds (a data URL),
    or a link. One naming bytes held nowhere (kept before such URIs were read, or another asset's
    `ccdefault:`, which names the PNG itself) is never written."""
    return [a for a in _other_assets(character) if str(a.get("uri", "")).lower().startswith(CARRIED_URIS)]


def export_warnings(character: Any) -> list[Text]:
    """What an export of the character leaves out, by name (another app's files it does not hold)."""
    names = [str(a.get("name") or a.get("uri")) for a in _other_assets(character)
             if not str(a.get("uri", "")).lower().startswith(CARRIED_URIS)]  # fmt: skip
    names += carried_extensions(character)[1]
    if not names:
        return []
    return [Text("card.export_left_out", {"count": len(names), "names": ", ".join(names)[:300]})]


@dataclass(frozen=True)
class KeptFile:
    """A file another app's card brought with the character (an emotion picture, a background…): what
    it is to that app (`type`), its name, its extension and its bytes."""

    type: str
    name: str
    ext: str
    data: bytes = field(repr=False)


def _risu_files(risu: Any) -> list[KeptFile]:
    """RisuAI's V2 pictures (base64 in its extension: `emotions` as `[name, data]`, `additionalAssets`
    as `[name, data, ext]`) as the V3 assets RisuAI's own V3 export makes of them (`createBaseV3`):
    `x-risu-asset` (its extension, else png), then `emotion` (png)."""
    risu = risu if isinstance(risu, dict) else {}
    found = []
    for key, kind in (("additionalAssets", "x-risu-asset"), ("emotions", "emotion")):
        for entry in risu.get(key) if isinstance(risu.get(key), list) else []:
            if isinstance(entry, list) and len(entry) > 1 and isinstance(entry[1], str):
                try:
                    data = base64.b64decode(entry[1], validate=True)
                except ValueError:
                    continue
                ext = str(entry[2]) if kind == "x-risu-asset" and len(entry) > 2 and entry[2] else "png"
                found.append(KeptFile(kind, str(entry[0]), ext, data))
    return found


def export_assets(character: Any) -> list[tuple[dict[str, Any], bytes | None]]:
    """Another app's assets as an export lists them, each with the bytes it must carry (None: a link,
    written as it is): the kept V3 assets, then RisuAI's V2 pictures again as V3 assets. RisuAI reads
    a V3 card's pictures from its `assets` alone (it prefers our `ccv3` to our `chara`), so without
    them a RisuAI V2 card's emotions would be lost there. Each export puts the bytes where RisuAI
    looks: a PNG in `chara-ext-asset_:N` chunks, a CHARX in files of its own."""
    found: list[tuple[dict[str, Any], bytes | None]] = []
    for asset in kept_assets(character):
        uri = str(asset.get("uri", ""))
        found.append((asset, asset_bytes(uri, {}) if uri.lower().startswith("data:") else None))
    for file in _risu_files(carried_extensions(character)[0].get("risuai")):
        found.append(({"type": file.type, "uri": "", "name": file.name, "ext": file.ext}, file.data))
    return found


def kept_files(character: Any) -> list[KeptFile]:
    """Every file the character keeps for another app, in the order an export lists them: its kept V3
    assets that hold their bytes, then RisuAI's own emotion images and other assets."""
    return [KeptFile(*(str(asset.get(k, "")) for k in ("type", "name", "ext")), data)
            for asset, data in export_assets(character) if data]  # fmt: skip


def _epoch(moment: Any) -> int:
    return int(as_utc(moment).timestamp()) if isinstance(moment, datetime) else int(datetime.now(UTC).timestamp())


def card_dates(character: Any) -> dict[str, int]:
    """The V3 card's dates: those of the card the character was imported from, where it has them (the
    modification date only until the character is changed here, see `changed_here`), else its own."""
    ours = (character.extensions or {}).get(NAMESPACE)
    stored = ours.get("dates") if isinstance(ours, dict) and isinstance(ours.get("dates"), dict) else {}
    own = {
        "creation_date": getattr(character, "created_at", None),
        "modification_date": getattr(character, "updated_at", None),
    }
    return {k: stored[k] if isinstance(stored.get(k), int) else _epoch(own[k]) for k in CARD_DATES}


def changed_here(extensions: Mapping[str, Any]) -> dict[str, Any]:
    """A character's extensions once it is changed here: the imported card's modification date no
    longer says when it last changed (its creation date still says when it was made)."""
    ours = extensions.get(NAMESPACE)
    if not (isinstance(ours, dict) and isinstance(ours.get("dates"), dict) and "modification_date" in ours["dates"]):
        return dict(extensions)
    dates = {k: v for k, v in ours["dates"].items() if k != "modification_date"}
    ours = {k: v for k, v in ours.items() if k != "dates"} | ({"dates": dates} if dates else {})
    return {k: v for k, v in extensions.items() if k != NAMESPACE} | ({NAMESPACE: ours} if ours else {})


def card_documents(character: Any, assets: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The V2 and V3 card documents, each with the V1 fields at its top for old readers; `assets`
    (the main icon, our references and the kept ones, in order) and other apps' V3 fields go into the
    V3 card alone, with its dates (`card_dates`)."""
    data = card_data(character)
    v1 = {k: data[k] for k in V1_FIELDS}
    v2 = {**v1, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}
    stored = _stored_v3(character)
    v3_fields = {k: stored[k] if isinstance(stored.get(k), kind) else kind() for k, kind in V3_KEPT.items()}
    v3_fields.update(assets=list(assets), **card_dates(character))
    v3 = {**v1, "spec": "chara_card_v3", "spec_version": "3.0", "data": {**data, **v3_fields}}
    return v2, v3


def _in_chunks(character: Any) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Another app's assets as a PNG card lists them, and the files its `chara-ext-asset_:N` chunks
    hold (N from 1, in order), as RisuAI writes its own: `__asset:N` in the URI, the card's JSON small."""
    assets, files = [], []
    for asset, data in export_assets(character):
        if data is not None:
            files.append(data)
            asset = {**asset, "uri": f"{RISU_ASSET}{len(files)}"}
        assets.append(asset)
    return assets, files


def write_card_png(character: Any, sheet_png: bytes, extras: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """A PNG of the main sheet carrying the card twice, as SillyTavern writes it: `chara` (V2) then
    `ccv3` (V3), both `tEXt`, and another app's files in RisuAI's chunks (`_in_chunks`). Each extra
    reference image `(original name, PNG)` rides in the V3 assets as a data URL; a card past
    MAX_CARD_BYTES (which readers refuse) is refused: CHARX carries it."""
    references = [reference_asset(name, data_url(data)) for name, data in extras]
    kept, files = _in_chunks(character)
    v2, v3 = card_documents(character, [MAIN_ICON, *references, *kept])
    chara, ccv3 = _b64(v2), _b64(v3)
    if max(len(chara), len(ccv3)) // 4 * 3 > MAX_CARD_BYTES:
        raise CardError("export_too_large", character.name)
    info = PngImagePlugin.PngInfo()
    info.add_text("chara", chara)
    info.add_text("ccv3", ccv3)
    for number, data in enumerate(files, start=1):
        info.add_text(f"{ASSET_CHUNK}:{number}", base64.b64encode(data).decode("ascii"))
    buf = io.BytesIO()
    Image.open(io.BytesIO(sheet_png)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_card_size(character: Any, extra_sizes: Sequence[int]) -> int:
    """An upper bound on the V3 card's decoded JSON for extra images of these sizes, without building it:
    whether a PNG card would fit under MAX_CARD_BYTES."""
    _, v3 = card_documents(character, [MAIN_ICON, *_in_chunks(character)[0]])
    base = len(dumps(v3).encode("utf-8"))
    return base + sum(4 * ((size + 2) // 3) + 1_000 for size in extra_sizes)  # base64, and the entry around it


def _b64(document: dict[str, Any]) -> str:
    """Strict JSON (no NaN, no Infinity: SillyTavern's JSON.parse refuses them), base64 of its UTF-8."""
    text = dumps(document)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")
