"""CHARX: the Character Card V3 zip. `card.json` at the root, every picture a file beside it.

The main sheet is the `icon` asset named `main` (`assets/icon/images/main.png`), each extra reference
image an asset of our type (`assets/x_refsheet_reference/images/…`), in order, with its original name;
URIs are `embeded://path` (the spec's spelling). Another app's assets kept from an import are written
back as files of their own (RisuAI's V2 pictures too, as V3 assets: see `cards.export_assets`), never
as a `.json` member, which RisuAI's reader skips. Reading goes through `core.formats.archive`: unsafe
paths, zip bombs and oversized members are refused before anything is inflated past its limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from core.base.text import dumps
from core.formats.archive import ZipLimits, read_zip, write_zip
from core.formats.cards import (
    MAX_CARD_BYTES,
    REFERENCE_TYPE,
    Card,
    CardError,
    card_documents,
    data_url,
    export_assets,
    parse_card_json,
    reference_asset,
)

CARD_JSON = "card.json"
MAIN_PATH = "assets/icon/images/main.png"
# A picture is at most 20 MB as uploaded (core.base.sheets.ImageLimits); room for a few other apps' files.
LIMITS = ZipLimits(member_bytes=48 * 2**20, total_bytes=256 * 2**20, members=2_000)
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif", "avif", "bmp", "apng")


def is_charx(raw: bytes, name: str = "") -> bool:
    """A zip (by its first bytes) or a file named `.charx`: what `read_charx` reads."""
    return raw.startswith(b"PK\x03\x04") or name.lower().endswith(".charx")


def read_charx(raw: bytes, name: str = "") -> Card:
    """The V3 card in a CHARX with its members (for `embeded://` URIs), or `ArchiveError` (an unsafe
    or oversized zip) or `CardError` (no `card.json`, or not a V3 card). Nothing else is required: no
    `module.risum`, no `x_meta`."""
    files = read_zip(raw, name or "file.charx", LIMITS)
    text = files.get(CARD_JSON)
    if text is None:
        raise CardError("charx_no_card", name)
    if len(text) > MAX_CARD_BYTES:
        raise CardError("too_large", name)
    try:
        document = parse_card_json(text.decode("utf-8-sig"), name)
    except UnicodeDecodeError as exc:
        raise CardError("unreadable", name) from exc
    if not (isinstance(document, dict) and document.get("spec") == "chara_card_v3"):
        raise CardError("charx_not_v3", name)
    if not isinstance(document.get("data"), dict):
        raise CardError("unreadable", name)
    return Card("chara_card_v3", dict(document["data"]), None, files)


def write_charx(character: Any, sheets: Sequence[tuple[str, bytes]]) -> bytes:
    """The character as a CHARX: `sheets` are `(original name, PNG)`, the main sheet first, each stored
    byte for byte; kept assets that came as data URLs become files again."""
    if not sheets:
        raise ValueError("a CHARX needs the main sheet")
    (_, main), extras = sheets[0], sheets[1:]
    files: dict[str, bytes] = {MAIN_PATH: main}
    assets: list[dict[str, Any]] = [{"type": "icon", "uri": f"embeded://{MAIN_PATH}", "name": "main", "ext": "png"}]
    for i, (name, data) in enumerate(extras, start=1):
        path = f"assets/{REFERENCE_TYPE}/images/{i:03d}_{_ascii(name.rsplit('.', 1)[0])}.png"
        files[path] = data
        assets.append(reference_asset(name, f"embeded://{path}"))
    for i, (asset, data) in enumerate(export_assets(character), start=1):
        assets.append(_as_file(asset, data, i, files))
    _, v3 = card_documents(character, assets)
    card = {k: v3[k] for k in ("spec", "spec_version", "data")}  # card.json is a V3 object, nothing else
    text = dumps(card).encode("utf-8")
    return write_zip({CARD_JSON: text, **files})


def _as_file(asset: dict[str, Any], data: bytes | None, index: int, files: dict[str, bytes]) -> dict[str, Any]:
    """A kept asset with its bytes moved into a file of its own (a link stays as it is). A `.json`
    file would be skipped by RisuAI's CHARX reader and its URI left dangling, so such an asset keeps
    its bytes inline, as a data URL (which RisuAI reads too)."""
    if data is None:
        return asset
    ext = _ascii(str(asset.get("ext") or "bin")).lower()[:10] or "bin"
    if ext == "json":
        return {**asset, "uri": data_url(data, ext)}
    kind = _ascii(str(asset.get("type") or "other"))[:40] or "other"
    folder = "images" if ext in IMAGE_EXTENSIONS else "other"
    path = f"assets/{kind}/{folder}/{index:03d}_{_ascii(str(asset.get('name', '')))}.{ext}"
    files[path] = data
    return {**asset, "uri": f"embeded://{path}"}


def _ascii(text: str) -> str:
    """A path part in plain ASCII (as the spec asks of CHARX paths): letters, digits, `-` and `_`."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:60] or "image"
