"""Every reference image travels in a card: PNG (V3 assets) and CHARX (the V3 zip) round trips keep
every profile field and every image, pixel for pixel, in order, with its name; other apps' assets are
kept; a CHARX that would land files outside its folder or inflate past its limits is refused."""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from core.base.profile import Profile
from core.base.sheets import prepare_image
from core.formats import cards
from core.formats.archive import ArchiveError
from core.formats.cards import MAX_CARD_BYTES, NAMESPACE, REFERENCE_TYPE, CardError, png_text_chunks, read_card
from core.services import characters
from core.services.users import LOCAL_USER
from tests.conftest import encode


@pytest.fixture
def card_png(shared) -> bytes:
    return (shared / "cards" / "default_Seraphina.png").read_bytes()


@pytest.fixture
def third_png() -> bytes:
    """A small picture with transparency and noise: every pixel counts."""
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(48, 64, 4), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGBA"), "PNG")


@pytest.fixture
def made(engine, card_png: bytes, neutral_png: bytes, joy_png: bytes, third_png: bytes):
    """A character with every kind of field (from the real Seraphina card) and three images."""
    profile = characters.read_card_file(card_png, "default_Seraphina.png").profile
    profile |= {"notes": "Sings when nobody listens.", "language": "日本語", "alternate_greetings": ["Hi.", "Hey."]}
    images = [
        prepare_image(neutral_png, "seraphina_neutral.png"),
        prepare_image(joy_png, "seraphina_joy.png"),
        prepare_image(third_png, "侧面 view.png"),
    ]
    return characters.create(engine, LOCAL_USER, profile, images)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def stored(engine, character_id: int) -> list[tuple[str, bytes]]:
    from sqlmodel import Session

    from storage import characters as chars

    with Session(engine) as session:
        return [(row.original_name, data) for row, data in chars.sheets(session, character_id)]


def profile(engine, character_id: int) -> dict:
    return Profile.model_validate(characters.get(engine, LOCAL_USER, character_id), from_attributes=True).model_dump()


def recreate(engine, draft: characters.CardDraft):
    assert draft.picture is not None and draft.picture_error is None
    return characters.create(engine, LOCAL_USER, draft.profile, [draft.picture, *draft.extra_pictures])


def assert_same_character(engine, original_id: int, copy_id: int) -> None:
    before, after = profile(engine, original_id), profile(engine, copy_id)
    # The card's dates (the original's own) are kept to be written back: nothing else of ours is stored.
    original = characters.get(engine, LOCAL_USER, original_id)
    assert after["extensions"].pop(NAMESPACE) == {"dates": cards.card_dates(original)}
    for key, value in before.items():
        if key == "character_book":
            assert after[key] == {"extensions": {}, **value}, key  # the key SillyTavern's validator wants
        else:
            assert after[key] == value, key
    old, new = stored(engine, original_id), stored(engine, copy_id)
    assert len(new) == len(old) == 3
    assert [name for name, _ in new[1:]] == [name for name, _ in old[1:]]  # extras: order and names
    for (_, a), (_, b) in zip(old, new, strict=True):
        assert np.array_equal(pixels(a), pixels(b))


def ccv3(png: bytes) -> dict:
    return json.loads(base64.b64decode(png_text_chunks(png)["ccv3"]))


# -- PNG -------------------------------------------------------------------------------------------------
def test_png_round_trip_keeps_every_field_and_every_image(engine, made) -> None:
    exported = characters.export_card(engine, LOCAL_USER, made.id)
    assets = ccv3(exported)["data"]["assets"]
    assert [(a["type"], a["name"], a["ext"]) for a in assets] == [
        ("icon", "main", "png"), (REFERENCE_TYPE, "seraphina_joy", "png"), (REFERENCE_TYPE, "侧面 view", "png"),
    ]  # fmt: skip
    assert assets[0]["uri"] == "ccdefault:" and all(a["uri"].startswith("data:image/png;base64,") for a in assets[1:])
    draft = characters.read_card_file(exported, "Seraphina.png")
    assert draft.warnings == () and len(draft.extra_pictures) == 2
    copy = recreate(engine, draft)
    assert_same_character(engine, made.id, copy.id)
    # Exported again: our assets are written anew, never twice; nothing of them is stored in the profile.
    assert set(profile(engine, copy.id)["extensions"][NAMESPACE]) == {"dates"}
    again = ccv3(characters.export_card(engine, LOCAL_USER, copy.id))["data"]["assets"]
    assert [(a["type"], a["name"]) for a in again] == [(a["type"], a["name"]) for a in assets]


def test_png_has_v1_fields_and_chara_then_ccv3_text_chunks(engine, made) -> None:
    exported = characters.export_card(engine, LOCAL_USER, made.id)
    kinds, at = [], 8
    while at < len(exported):
        length, kind = struct.unpack(">I4s", exported[at : at + 8])
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            kinds.append((kind, exported[at + 8 : at + 8 + length].split(b"\0", 1)[0]))
        at += 12 + length
    assert kinds == [(b"tEXt", b"chara"), (b"tEXt", b"ccv3")]  # what SillyTavern reads, in its order
    chunks = png_text_chunks(exported)
    for key in ("chara", "ccv3"):
        document = json.loads(base64.b64decode(chunks[key]))
        data = document["data"]
        for field in ("name", "description", "personality", "scenario", "first_mes", "mes_example"):
            assert document[field] == data[field], field  # V1 readers find the fields at the top
        assert document["name"] == "Seraphina"
        assert data["character_book"]["extensions"] == {}
    assert "assets" not in json.loads(base64.b64decode(chunks["chara"]))["data"]  # images ride in ccv3 alone
    assert len(chunks["chara"]) < len(chunks["ccv3"]) // 4


def test_real_card_imports_as_before(card_png: bytes) -> None:
    draft = characters.read_card_file(card_png, "default_Seraphina.png")
    assert draft.profile == cards.profile_from_card(read_card(card_png, "default_Seraphina.png"))
    assert draft.picture is not None and draft.picture.original_name == "default_Seraphina.png"
    assert draft.extra_pictures == () and draft.warnings == ()
    assert draft.profile["name"] == "Seraphina" and draft.profile["extensions"]["world"] == "Eldoria"


def test_a_png_card_too_large_for_readers_is_refused_pointing_at_charx(engine, made, monkeypatch) -> None:
    assert characters.png_card_fits(engine, LOCAL_USER, made.id)
    monkeypatch.setattr(cards, "MAX_CARD_BYTES", 100_000)  # the two extra pictures take ~350 kB of base64
    monkeypatch.setattr(characters, "MAX_CARD_BYTES", 100_000)
    assert not characters.png_card_fits(engine, LOCAL_USER, made.id)
    with pytest.raises(CardError) as refused:
        characters.export_card(engine, LOCAL_USER, made.id)
    assert refused.value.code == "export_too_large" and "CHARX" in str(refused.value)
    assert characters.export_charx(engine, LOCAL_USER, made.id).startswith(b"PK")  # which always works


def test_broken_extra_pictures_are_warnings_not_failures(neutral_png: bytes) -> None:
    good = base64.b64encode(prepare_image(neutral_png, "x.png").data).decode()
    assets = [
        {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
        {"type": REFERENCE_TYPE, "uri": "data:image/png;base64," + base64.b64encode(b"not a picture").decode(),
         "name": "broken", "ext": "png"},
        {"type": REFERENCE_TYPE, "uri": "embeded://assets/gone.png", "name": "elsewhere", "ext": "png"},
        {"type": REFERENCE_TYPE, "uri": f"data:image/png;base64,{good}", "name": "fine", "ext": "png"},
        "not an asset",
    ]  # fmt: skip
    card = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Mira", "assets": assets}}
    draft = characters.read_card_file(json.dumps(card).encode(), "mira.json")
    assert [p.original_name for p in draft.extra_pictures] == ["fine.png"]
    said = " ".join(w.render("en") for w in draft.warnings)
    assert "broken.png" in said and "elsewhere.png" in said and "assets" in said
    assert draft.picture is None  # a JSON card's `ccdefault:` icon is no picture


# -- CHARX -----------------------------------------------------------------------------------------------
def test_charx_round_trip_keeps_every_field_and_every_image(engine, made) -> None:
    exported = characters.export_charx(engine, LOCAL_USER, made.id)
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        names = archive.namelist()
        card = json.loads(archive.read("card.json"))
        assert card["spec"] == "chara_card_v3" and set(card) == {"spec", "spec_version", "data"}
        assets = card["data"]["assets"]
        assert assets[0] == {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main",
                             "ext": "png"}  # fmt: skip
        for asset, (_, data) in zip(assets, stored(engine, made.id), strict=True):
            path = asset["uri"].removeprefix("embeded://")
            assert archive.read(path) == data  # byte for byte: the stored PNG itself
    assert all(name.isascii() for name in names) and names[0] == "card.json"
    assert [a["name"] for a in assets[1:]] == ["seraphina_joy", "侧面 view"]
    draft = characters.read_card_file(exported, "Seraphina.charx")
    assert draft.warnings == () and len(draft.extra_pictures) == 2
    copy = recreate(engine, draft)
    assert_same_character(engine, made.id, copy.id)


def _charx(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _v3(**data) -> bytes:
    return json.dumps({"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Aria", **data}}).encode()


def test_other_apps_assets_are_kept_across_import_and_export(engine, neutral_png: bytes, joy_png: bytes) -> None:
    smile = encode(Image.new("RGB", (8, 8), "yellow"), "PNG")
    theme = b"-- a script another app runs\n"
    raw = _charx({
        "card.json": _v3(assets=[
            {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"},
            {"type": "emotion", "uri": "embeded://assets/emotion/images/smile.png", "name": "smile", "ext": "png"},
            {"type": "background", "uri": "https://example.com/forest.png", "name": "forest", "ext": "png"},
            {"type": "x_risu_lua", "uri": "embeded://assets/x_risu_lua/code/theme.lua", "name": "theme", "ext": "lua"},
            {"type": REFERENCE_TYPE, "uri": "embeded://assets/x_refsheet_reference/images/a.png", "name": "joy",
             "ext": "png"},
        ]),
        "assets/icon/images/main.png": neutral_png,
        "assets/emotion/images/smile.png": smile,
        "assets/x_risu_lua/code/theme.lua": theme,
        "assets/x_refsheet_reference/images/a.png": joy_png,
        "x_meta/1.json": b"{}",
    })  # fmt: skip
    draft = characters.read_card_file(raw, "aria.charx")
    assert draft.warnings == () and [p.original_name for p in draft.extra_pictures] == ["joy.png"]
    assert np.array_equal(pixels(draft.picture.data), pixels(prepare_image(neutral_png).data))
    made = recreate(engine, draft)

    def others(assets: list[dict]) -> list[tuple[str, str]]:
        return [(a["type"], a["name"]) for a in assets if a["type"] not in ("icon", REFERENCE_TYPE)]

    expected = [("emotion", "smile"), ("background", "forest"), ("x_risu_lua", "theme")]
    png = characters.export_card(engine, LOCAL_USER, made.id)
    png_assets = ccv3(png)["data"]["assets"]
    assert others(png_assets) == expected and [a["type"] for a in png_assets[:2]] == ["icon", REFERENCE_TYPE]
    assert [a["uri"] for a in png_assets[2:]] == ["__asset:1", "https://example.com/forest.png", "__asset:2"]
    chunks = png_text_chunks(png)  # in RisuAI's chunks, byte for byte; a link stays a link
    assert [base64.b64decode(chunks[f"chara-ext-asset_:{n}"]) for n in (1, 2)] == [smile, theme]
    exported = characters.export_charx(engine, LOCAL_USER, made.id)
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        assets = json.loads(archive.read("card.json"))["data"]["assets"]
        assert others(assets) == expected and len(assets) == 5
        files = {a["name"]: archive.read(a["uri"].removeprefix("embeded://")) for a in assets if "embeded" in a["uri"]}
    assert files["smile"] == smile and files["theme"] == theme  # written back as files
    # Round and round: nothing is duplicated, nothing lost.
    again = recreate(engine, characters.read_card_file(exported, "aria.charx"))
    png_again = ccv3(characters.export_card(engine, LOCAL_USER, again.id))["data"]["assets"]
    assert [(a["type"], a["name"]) for a in png_again] == [(a["type"], a["name"]) for a in png_assets]


def test_a_charx_missing_another_apps_file_says_so() -> None:
    raw = _charx({"card.json": _v3(assets=[{"type": "emotion", "uri": "embeded://assets/sad.png", "name": "sad",
                                            "ext": "png"}])})  # fmt: skip
    draft = characters.read_card_file(raw, "aria.charx")
    assert any("sad" in w.render("en") for w in draft.warnings)
    assert NAMESPACE not in draft.profile["extensions"]  # nothing kept that names bytes the file does not hold


@pytest.mark.parametrize(
    ("files", "error", "code"),
    [
        ({"card.json": b"{}", "../evil.png": b"x"}, ArchiveError, "unsafe_path"),
        ({"card.json": b"{}", "assets/../../evil.png": b"x"}, ArchiveError, "unsafe_path"),
        ({"card.json": b"{}", "/etc/evil": b"x"}, ArchiveError, "unsafe_path"),
        ({"card.json": b"{}", "C:/evil": b"x"}, ArchiveError, "unsafe_path"),
        ({f"assets/other/{i}.txt": b"" for i in range(2_001)}, ArchiveError, "too_many"),
        ({"assets/icon/images/main.png": b"x"}, CardError, "charx_no_card"),
        ({"card.json": json.dumps({"spec": "chara_card_v2", "data": {"name": "Old"}}).encode()}, CardError,
         "charx_not_v3"),
        ({"card.json": b"{not json"}, CardError, "unreadable"),
    ],
)  # fmt: skip
def test_unsafe_or_wrong_charx_files_are_refused_clearly(files: dict, error: type, code: str) -> None:
    with pytest.raises(error) as refused:
        characters.read_card_file(_charx(files), "evil.charx")
    assert refused.value.code == code
    assert "evil.charx" in refused.value.message("en") and refused.value.message("zh")


def _patch_sizes(raw: bytes, size: int) -> bytes:
    """Every header's uncompressed size set to `size` (a member that lies about what it holds)."""
    data = bytearray(raw)
    at = data.find(b"PK\x03\x04")
    while at != -1:  # local headers: uncompressed size at 22
        data[at + 22 : at + 26] = struct.pack("<I", size)
        at = data.find(b"PK\x03\x04", at + 4)
    at = data.find(b"PK\x01\x02")
    while at != -1:  # central directory: uncompressed size at 24
        data[at + 24 : at + 28] = struct.pack("<I", size)
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def test_a_member_declaring_a_gigabyte_is_refused_before_inflating() -> None:
    raw = _patch_sizes(_charx({"card.json": _v3(), "assets/icon/images/main.png": b"tiny"}), 2**30)
    assert zipfile.ZipFile(io.BytesIO(raw)).infolist()[1].file_size == 2**30
    started = time.monotonic()
    with pytest.raises(ArchiveError) as refused:
        characters.read_card_file(raw, "bomb.charx")
    assert refused.value.code == "too_large" and time.monotonic() - started < 1


def test_a_zip_bomb_is_stopped_at_its_limit() -> None:
    zeros = bytes(100 * 2**20)  # 100 MB of nothing: a tenth of a megabyte once deflated
    honest = _charx({"card.json": _v3(), "assets/other/other/zeros.bin": zeros})
    del zeros
    assert len(honest) < 2**20
    with pytest.raises(ArchiveError) as refused:
        characters.read_card_file(honest, "bomb.charx")
    assert refused.value.code == "too_large"
    liar = _patch_sizes(honest, 1_000)  # says 1 kB: inflating stops there, and the check finds the lie
    started = time.monotonic()
    with pytest.raises(ArchiveError) as refused:
        characters.read_card_file(liar, "bomb.charx")
    assert refused.value.code == "damaged" and time.monotonic() - started < 2


def test_json_card_limits_still_hold_inside_a_charx() -> None:
    huge = _charx({"card.json": b" " * (MAX_CARD_BYTES + 1)})
    with pytest.raises(CardError) as refused:
        characters.read_card_file(huge, "huge.charx")
    assert refused.value.code == "too_large"


# -- the pages -------------------------------------------------------------------------------------------
def test_create_page_takes_every_picture_of_a_charx_and_library_offers_both_exports(
    app_env, app_db, neutral_png: bytes, joy_png: bytes, third_png: bytes, monkeypatch
) -> None:
    from tests.conftest import new_app

    images = [prepare_image(d, n) for d, n in ((neutral_png, "front.png"), (joy_png, "joy.png"), (third_png, "b.png"))]
    source = characters.create(app_db, LOCAL_USER, {"name": "Mira"}, images)
    charx = characters.export_charx(app_db, LOCAL_USER, source.id)
    at = new_app("pages/create.py")
    at.file_uploader(key="card_0").set_value(("Mira.charx", charx, "application/zip")).run()
    assert not at.exception and any("Card “Mira” loaded" in s.value for s in at.success)
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert captions == ["Main sheet · Card picture", "joy.png · Card picture", "b.png · Card picture"]
    next(b for b in at.button if b.label == "Create character").click().run()
    assert not at.exception
    made = max(s.id for s in characters.summaries(app_db, LOCAL_USER))
    copied = stored(app_db, made)
    assert [name for name, _ in copied[1:]] == ["joy.png", "b.png"]
    for (_, a), (_, b) in zip(stored(app_db, source.id), copied, strict=True):
        assert np.array_equal(pixels(a), pixels(b))
    library = new_app("pages/library.py")
    next(b for b in library.button if b.key == f"edit_{made}").click().run()
    assert not library.exception
    buttons = [(d.proto.label, d.proto.disabled) for d in library.get("download_button")]
    assert buttons == [("Export character card (PNG)", False), ("Export character card (CHARX)", False)]
    monkeypatch.setattr(characters, "MAX_CARD_BYTES", 100_000)  # now the PNG would be too large for readers
    library.run()
    buttons = [(d.proto.label, d.proto.disabled, d.proto.help) for d in library.get("download_button")]
    assert buttons[0][1] is True and "CHARX" in buttons[0][2] and buttons[1][1] is False
