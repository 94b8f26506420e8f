"""Tavern cards with the real SillyTavern default card (Seraphina, V2 with a character book)."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest
from PIL import Image
from sqlmodel import Session

from core.base.profile import profile_of
from core.base.sheets import prepare_image
from core.formats.cards import NAMESPACE, CardError, profile_from_card, read_card, write_card_png
from core.model.prompts import character_prompt
from storage import characters as chars
from storage.db import session_scope


@pytest.fixture
def card_png(shared) -> bytes:
    return (shared / "cards" / "default_Seraphina.png").read_bytes()


def _chunk(png: bytes, key: str) -> dict:
    return json.loads(base64.b64decode(Image.open(io.BytesIO(png)).text[key]))


def test_import_reproduces_every_field(engine, card_png: bytes) -> None:
    source = _chunk(card_png, "chara")["data"]
    card = read_card(card_png, "default_Seraphina.png")
    assert card.spec == "chara_card_v2" and card.image == card_png
    with session_scope(engine) as s:
        cid = chars.create_character(s, [prepare_image(card.image, "card.png")], **profile_from_card(card)).id
    with Session(engine) as s:
        stored = chars.get_character(s, cid)
        for key, value in source.items():
            assert getattr(stored, key) == value, key  # description, book, extensions, tags …
        assert stored.character_book["entries"][0]["keys"] == ["eldoria", "wood", "forest", "magical forest"]
        assert stored.extensions == {"talkativeness": "0.5", "fav": False, "world": "Eldoria"}


def test_export_then_import_round_trips_and_keeps_unknown_extensions(engine, card_png: bytes) -> None:
    card = read_card(card_png)
    with session_scope(engine) as s:
        image = prepare_image(card.image, "card.png")
        character = chars.create_character(s, [image], **profile_from_card(card))
        character.notes, character.language = "Speaks softly.", "日本語"
        character.created_at = datetime(2024, 5, 12, 14, 30, tzinfo=UTC)
        character.updated_at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        exported = write_card_png(character, image.data)
    v2, v3 = _chunk(exported, "chara"), _chunk(exported, "ccv3")
    assert (v2["spec"], v2["spec_version"], v3["spec"], v3["spec_version"]) == (
        "chara_card_v2", "2.0", "chara_card_v3", "3.0",
    )  # fmt: skip
    assert v2["data"]["extensions"]["world"] == "Eldoria"  # someone else's key survives
    ours = {"notes": "Speaks softly.", "language": "日本語", "composed": {"appearance_line": False}}
    assert v2["data"]["extensions"][NAMESPACE] == v3["data"]["extensions"][NAMESPACE] == ours  # no stale V3 copy
    # An app that reads no extension gets the notes and the reply language in the description.
    original = profile_from_card(card)
    written = original["description"] + "\n\nSpeaks softly.\n\n{{char}} always speaks Japanese (日本語)."
    assert v2["data"]["description"] == v3["data"]["description"] == v2["description"] == written
    # The V3 dates are the character's own (seconds since 1970), not the moment of the export.
    assert (v3["data"]["creation_date"], v3["data"]["modification_date"]) == (1715524200, 1735787045)
    again = profile_from_card(read_card(exported))
    # Nothing of ours stored twice, no V3 copy: only the card's dates, kept to be written back.
    assert again["extensions"].pop(NAMESPACE) == {
        "dates": {"creation_date": 1715524200, "modification_date": 1735787045}
    }
    for key, value in original.items():
        if key == "character_book":  # comes back whole, with the `extensions` SillyTavern's validator requires
            assert again[key] == {"extensions": {}, **value}
        elif key not in ("notes", "language"):
            assert again[key] == value, key  # the description as it was: the notes are not in it twice
    assert (again["notes"], again["language"]) == ("Speaks softly.", "日本語")


def test_v3_chunk_is_preferred_and_v1_json_works() -> None:
    info_png = io.BytesIO()
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("chara", base64.b64encode(json.dumps({"spec": "chara_card_v2", "data": {"name": "Old"}}).encode()))
    v3 = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "New", "nickname": "N"}}
    info.add_text("ccv3", base64.b64encode(json.dumps(v3).encode()))
    Image.new("RGB", (8, 8)).save(info_png, format="PNG", pnginfo=info)
    card = read_card(info_png.getvalue())
    assert card.data["name"] == "New" and profile_from_card(card)["extensions"][NAMESPACE]["v3"]["nickname"] == "N"
    v1 = read_card(json.dumps({"name": "Flat", "description": "old style", "first_mes": "Hi"}).encode())
    assert profile_from_card(v1)["description"] == "old style"


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"just text", "not_card"), (b'{"hello": 1}', "not_card"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "unreadable")],
)
def test_bad_cards_get_clear_messages(raw: bytes, code: str) -> None:
    with pytest.raises(CardError) as info:
        read_card(raw, "thing")
    assert info.value.code == code and "thing" in str(info.value)


def test_plain_picture_is_not_a_card(neutral_png: bytes) -> None:
    with pytest.raises(CardError, match="without character card data"):
        read_card(neutral_png, "seraphina_neutral.png")


def test_creator_notes_stay_out_of_the_prompt(card_png: bytes) -> None:
    card = read_card(card_png)
    profile = profile_from_card(card)
    sheet = prepare_image(card.image)

    prompt = character_prompt(profile_of(profile), [sheet])
    assert "contest winner" not in prompt.instruction and "Seraphina" in prompt.instruction
