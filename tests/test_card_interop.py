"""Our cards read by the apps they are for, and theirs by us, checked with those apps' own reading
logic under node (tests/node/): SillyTavern's card parser (what its prompt gets) and RisuAI's asset
resolution (which refuses a card naming a file it does not hold).

The RisuAI card is built the way its exporter writes one (src/ts/characterCards.ts `createBaseV3`
and `exportCharacterCard`, src/ts/pngChunk.ts `StreamChunkWriter`): the picture's chunks without its
text, one `chara-ext-asset_:N` tEXt chunk of base64 per asset that is not `ccdefault:` (numbered from
1 in asset order, the URI becoming `__asset:N`), then `ccv3`, then IEND; no `chara` chunk."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from core.base.profile import MAX_TEXT, Profile
from core.base.sheets import prepare_image
from core.formats import cards
from core.formats.cards import NAMESPACE, png_text_chunks, read_card
from core.services import characters
from core.services.users import LOCAL_USER
from tests.conftest import encode

NODE = shutil.which("node")
SCRIPTS = Path(__file__).parent / "node"
pytestmark = pytest.mark.skipif(NODE is None, reason="needs node (the apps' reading logic runs under it)")


def node(script: str, path: Path) -> dict:
    done = subprocess.run([NODE, str(SCRIPTS / script), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    found, at = [], 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        found.append((png[at + 4 : at + 8], png[at + 8 : at + 8 + length]))
        at += 12 + length
    return found


def risu_png(main: bytes, card: dict, files: dict[int, bytes], extra_chunks: dict[str, bytes] | None = None) -> bytes:
    """A PNG as RisuAI's `StreamChunkWriter` writes it: the picture's chunks (no tEXt, no IEND), the
    asset chunks, anything else given, `ccv3`, IEND."""
    body = [_chunk(kind, data) for kind, data in _chunks(main) if kind not in (b"tEXt", b"IEND")]
    body += [_chunk(b"tEXt", b"chara-ext-asset_:%d\0" % i + base64.b64encode(data)) for i, data in files.items()]
    body += [_chunk(b"tEXt", key.encode() + b"\0" + value) for key, value in (extra_chunks or {}).items()]
    body.append(_chunk(b"tEXt", b"ccv3\0" + base64.b64encode(json.dumps(card).encode())))
    return main[:8] + b"".join(body) + _chunk(b"IEND", b"")


def risu_card(assets: list[dict]) -> dict:
    """`createBaseV3` for a character with a lorebook-less profile; `undefined` fields left out, as
    JSON.stringify leaves them."""
    return {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": "Mira", "description": "A lantern keeper of the northern pier.", "personality": "Calm, dry wit.",
            "scenario": "", "first_mes": "*Mira trims the wick.* You're late.", "mes_example": "", "creator_notes": "",
            "system_prompt": "", "post_history_instructions": "", "alternate_greetings": [],
            "character_book": {"extensions": {"risu_fullWordMatching": False}, "entries": []},
            "tags": ["lighthouse"], "creator": "", "character_version": "",
            "extensions": {"risuai": {"bias": [], "viewScreen": "emotion", "customScripts": [], "utilityBot": False,
                                      "sdData": [], "additionalText": "", "virtualscript": "", "largePortrait": True,
                                      "lorePlus": False, "inlayViewScreen": False, "vits": {}, "lowLevelAccess": False,
                                      "defaultVariables": "", "triggerscript": []}},
            "group_only_greetings": [], "nickname": "", "source": [], "creation_date": 1717000000,
            "modification_date": 1717100000, "assets": assets,
        },
    }  # fmt: skip


@pytest.fixture
def risu(neutral_png: bytes, joy_png: bytes) -> dict:
    """RisuAI's export of Mira: a background (`x-risu-asset`, RisuAI's additional asset), a sound, two
    emotion pictures and the main icon, in `createBaseV3`'s order; the files it numbers 1 to 4."""
    sad = encode(Image.new("RGB", (40, 60), (40, 60, 140)), "PNG")
    forest = encode(Image.new("RGB", (64, 32), (20, 90, 40)), "WEBP")
    bell = bytes(range(256)) * 8  # not a picture: kept, written back, never shown
    files = {1: forest, 2: bell, 3: joy_png, 4: sad}
    assets = [
        {"type": "x-risu-asset", "uri": "__asset:1", "name": "forest", "ext": "webp"},
        {"type": "x-risu-asset", "uri": "__asset:2", "name": "bell", "ext": "mp3"},
        {"type": "emotion", "uri": "__asset:3", "name": "joy", "ext": "png"},
        {"type": "emotion", "uri": "__asset:4", "name": "sad", "ext": "png"},
        {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
    ]
    return {"card": risu_card(assets), "files": files, "main": neutral_png}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def resolved(report: dict) -> dict[str, tuple[str, str]]:
    assert "error" not in report, report
    return {a["name"]: (a["type"], a["sha256"]) for a in report["assets"]}


# -- RisuAI -----------------------------------------------------------------------------------------------
def test_risuai_emotion_pictures_come_in_and_both_exports_resolve_in_risuai(engine, risu, tmp_path) -> None:
    raw = risu_png(risu["main"], risu["card"], risu["files"])
    before = resolved(node("risuai_assets.mjs", _write(tmp_path, "mira.png", raw)))  # RisuAI takes the card itself
    assert set(before) == {"forest", "bell", "joy", "sad", "main"}

    draft = characters.read_card_file(raw, "mira.png")
    assert draft.warnings == () and draft.picture is not None and draft.extra_pictures == ()
    made = characters.create(engine, LOCAL_USER, draft.profile, [draft.picture])
    kept = {f.name: (f.type, f.ext, f.data) for f in cards.kept_files(made)}
    assets = risu["card"]["data"]["assets"][:4]  # every file but the main icon, byte for byte, in order
    assert kept == {a["name"]: (a["type"], a["ext"], risu["files"][i]) for i, a in enumerate(assets, start=1)}
    shown = characters.other_pictures(made)  # the images panel: every picture, labelled, the sound left out
    assert [p.label for p in shown] == ["forest · x-risu-asset", "joy · emotion", "sad · emotion"]
    assert all(p.picture is not None and p.error is None for p in shown)
    assert [p.label for p in characters.other_pictures(draft.profile)] == [p.label for p in shown]  # on Create too

    expected = {name: (kind, sha(data)) for name, (kind, _, data) in kept.items()}
    png = characters.export_card(engine, LOCAL_USER, made.id)
    charx = characters.export_charx(engine, LOCAL_USER, made.id)
    for exported, name in ((png, "export.png"), (charx, "export.charx")):
        report = resolved(node("risuai_assets.mjs", _write(tmp_path, name, exported)))  # no dangling URI
        assert {k: v for k, v in report.items() if k in expected} == expected  # the same bytes, each typed
        assert report["main"][0] == "icon"
    chunks = png_text_chunks(png)  # RisuAI's own way: each file in a chunk, `__asset:N` in the V3 card
    assert sorted(k for k in chunks if k.startswith("chara-ext-asset_")) == [f"chara-ext-asset_:{n}" for n in "1234"]
    assert len(chunks["ccv3"]) < 10_000  # the card's JSON stays small: no file inline
    # Round and round: our own export comes back with the same files, none twice.
    again = characters.create(engine, LOCAL_USER, characters.read_card_file(png, "export.png").profile, [draft.picture])
    assert [(f.name, f.data) for f in cards.kept_files(again)] == [(n, d) for n, (_, _, d) in kept.items()]


def test_a_risuai_asset_whose_chunk_is_missing_is_named_and_never_exported(engine, risu, tmp_path) -> None:
    files = {i: data for i, data in risu["files"].items() if i != 4}  # "sad" lost its chunk
    raw = risu_png(risu["main"], risu["card"], files)
    assert node("risuai_assets.mjs", _write(tmp_path, "broken.png", raw)) == {
        "error": "Error while importing, asset 4 not found"
    }  # what RisuAI says of such a card: the check catches a dangling URI
    draft = characters.read_card_file(raw, "broken.png")
    said = " ".join(w.render("en") for w in draft.warnings)
    assert "(sad)" in said and "will not be in an export" in said
    made = characters.create(engine, LOCAL_USER, draft.profile, [draft.picture])
    exported = characters.export_card(engine, LOCAL_USER, made.id)
    report = resolved(node("risuai_assets.mjs", _write(tmp_path, "out.png", exported)))
    assert "sad" not in report and {"joy", "forest", "bell"} <= set(report)


def test_an_asset_kept_before_risuai_chunks_were_read_is_left_out_of_exports_saying_so(engine, tmp_path) -> None:
    """A character stored with a dangling `__asset:N` (imported before this was read) exports without it."""
    stale = {"type": "emotion", "uri": "__asset:7", "name": "angry", "ext": "png"}
    made = characters.create(engine, LOCAL_USER, {"name": "Old", "extensions": {NAMESPACE: {"v3": {"assets": [stale]}},
                             "risuai": {"emotions": [["smug", "__asset:8"]]}}}, [prepare_image(encode(
                             Image.new("RGB", (8, 8)), "PNG"))])  # fmt: skip
    assert [w.render("en") for w in characters.export_notes(made)] == [
        "An export leaves out 2 files another app's card named but did not hold (angry, smug)."
    ]
    for exported, name in ((characters.export_card(engine, LOCAL_USER, made.id), "old.png"),
                           (characters.export_charx(engine, LOCAL_USER, made.id), "old.charx")):  # fmt: skip
        report = node("risuai_assets.mjs", _write(tmp_path, name, exported))
        assert "error" not in report and "angry" not in resolved(report)
    card = read_card(characters.export_card(engine, LOCAL_USER, made.id)).data
    assert card["extensions"]["risuai"]["emotions"] == []


def test_risuai_v2_emotions_in_its_extension_are_brought_inline(engine, neutral_png, joy_png, tmp_path) -> None:
    """An older RisuAI card (V2): emotions in `extensions.risuai.emotions`, as `[name, "__asset:N"]`."""
    risuai = {"emotions": [["joy", "__asset:1"]], "additionalAssets": []}
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Old Mira", "description": "d", "extensions": {"risuai": risuai}}}  # fmt: skip
    main = [(k, d) for k, d in _chunks(neutral_png) if k not in (b"tEXt", b"IEND")]
    raw = (neutral_png[:8] + b"".join(_chunk(k, d) for k, d in main)
           + _chunk(b"tEXt", b"chara-ext-asset_:1\0" + base64.b64encode(joy_png))
           + _chunk(b"tEXt", b"chara\0" + base64.b64encode(json.dumps(card).encode()))
           + _chunk(b"IEND", b""))  # fmt: skip
    draft = characters.read_card_file(raw, "old.png")
    assert draft.warnings == ()
    made = characters.create(engine, LOCAL_USER, draft.profile, [draft.picture])
    assert [(p.label, p.error) for p in characters.other_pictures(made)] == [("joy · emotion", None)]
    exported = _write(tmp_path, "old.png", characters.export_card(engine, LOCAL_USER, made.id))
    emotions = node("sillytavern_card.mjs", exported)["card"]["data"]["extensions"]["risuai"]["emotions"]
    assert emotions == [["joy", base64.b64encode(joy_png).decode()]]  # what SillyTavern's sprite import reads


def risu_v2_png(main: bytes, card: dict, files: dict[int, bytes]) -> bytes:
    """A PNG as RisuAI's V2 export ("ccv2") writes it: the picture's chunks, one `chara-ext-asset_:N`
    chunk per emotion, then per other asset, then `chara`, IEND; no `ccv3`."""
    body = [_chunk(kind, data) for kind, data in _chunks(main) if kind not in (b"tEXt", b"IEND")]
    body += [_chunk(b"tEXt", b"chara-ext-asset_:%d\0" % i + base64.b64encode(data)) for i, data in files.items()]
    body.append(_chunk(b"tEXt", b"chara\0" + base64.b64encode(json.dumps(card).encode())))
    return main[:8] + b"".join(body) + _chunk(b"IEND", b"")


def test_a_risuai_v2_card_keeps_its_pictures_in_risuai_after_our_exports(engine, neutral_png, joy_png, tmp_path):
    """RisuAI reads our `ccv3` before our `chara`, and a V3 card's pictures from its `assets` alone (its
    extension's `emotions` and `additionalAssets` only in a V2 card): both exports list them again as
    V3 assets, their bytes where RisuAI looks (PNG chunks, CHARX files), and our import keeps each once."""
    forest = encode(Image.new("RGB", (64, 32), (20, 90, 40)), "WEBP")
    risuai = {"emotions": [["joy", "__asset:1"]], "additionalAssets": [["forest", "__asset:2", "webp"]]}
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Old Mira", "description": "d", "extensions": {"risuai": risuai}}}  # fmt: skip
    raw = risu_v2_png(neutral_png, card, {1: joy_png, 2: forest})
    expected = {"joy": ("emotion", sha(joy_png)), "forest": ("x-risu-asset", sha(forest))}
    assert resolved(node("risuai_assets.mjs", _write(tmp_path, "v2.png", raw))) == expected  # RisuAI's own reading
    draft = characters.read_card_file(raw, "v2.png")
    assert draft.warnings == ()
    made = characters.create(engine, LOCAL_USER, draft.profile, [draft.picture])
    files = [(f.type, f.name, f.ext, f.data) for f in cards.kept_files(made)]
    assert files == [("x-risu-asset", "forest", "webp", forest), ("emotion", "joy", "png", joy_png)]
    png = characters.export_card(engine, LOCAL_USER, made.id)
    charx = characters.export_charx(engine, LOCAL_USER, made.id)
    for exported, name in ((png, "export.png"), (charx, "export.charx")):
        report = resolved(node("risuai_assets.mjs", _write(tmp_path, name, exported)))
        assert {k: v for k, v in report.items() if k != "main"} == expected  # in RisuAI: every picture, once
        again = characters.create(
            engine, LOCAL_USER, characters.read_card_file(exported, name).profile, [draft.picture]
        )
        assert [(f.type, f.name, f.ext, f.data) for f in cards.kept_files(again)] == files  # here: none twice
    emotions = node("sillytavern_card.mjs", _write(tmp_path, "st.png", png))["card"]["data"]["extensions"]["risuai"]
    assert emotions["emotions"] == [["joy", base64.b64encode(joy_png).decode()]]  # SillyTavern's reading unchanged


def test_a_duplicate_asset_chunk_gives_the_picture_risuai_shows(engine, risu, tmp_path) -> None:
    """RisuAI keeps the last of two `chara-ext-asset_:N` chunks of one number (SillyTavern reads the
    first `chara`, and so do we; of asset chunks, the last, as RisuAI)."""
    later = encode(Image.new("RGB", (30, 30), (200, 0, 200)), "PNG")
    raw = risu_png(risu["main"], risu["card"], risu["files"], {"chara-ext-asset_:3": base64.b64encode(later)})
    assert resolved(node("risuai_assets.mjs", _write(tmp_path, "dup.png", raw)))["joy"][1] == sha(later)
    made = characters.create(engine, LOCAL_USER, characters.read_card_file(raw, "dup.png").profile,
                             [prepare_image(risu["main"])])  # fmt: skip
    assert next(f.data for f in cards.kept_files(made) if f.name == "joy") == later


def test_another_assets_ccdefault_is_the_png_itself_and_never_a_uri_without_bytes(engine, risu, tmp_path) -> None:
    """`ccdefault:` names a PNG card's own picture: on an emotion it is kept as those bytes; in a JSON or
    CHARX card it names nothing, so it is left out, named. No export writes it for another asset."""
    calm = {"type": "emotion", "uri": "ccdefault:", "name": "calm", "ext": "png"}
    card = copy.deepcopy(risu["card"])
    card["data"]["assets"].insert(0, calm)
    raw = risu_png(risu["main"], card, risu["files"])
    in_risu = resolved(node("risuai_assets.mjs", _write(tmp_path, "calm.png", raw)))["calm"]
    draft = characters.read_card_file(raw, "calm.png")
    made = characters.create(engine, LOCAL_USER, draft.profile, [draft.picture])
    assert next(f.data for f in cards.kept_files(made) if f.name == "calm") == cards.picture_only(raw)
    for exported, name in ((characters.export_card(engine, LOCAL_USER, made.id), "calm_out.png"),
                           (characters.export_charx(engine, LOCAL_USER, made.id), "calm_out.charx")):  # fmt: skip
        assert resolved(node("risuai_assets.mjs", _write(tmp_path, name, exported)))["calm"] == in_risu
    document = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Mira", "assets": [calm]}}
    draft = characters.read_card_file(json.dumps(document).encode(), "calm.json")
    assert "(calm)" in " ".join(w.render("en") for w in draft.warnings) and NAMESPACE not in draft.profile["extensions"]
    kept_before = {"name": "Old", "extensions": {NAMESPACE: {"v3": {"assets": [calm]}}}}  # left out of exports, named
    stale = characters.create(engine, LOCAL_USER, kept_before, [prepare_image(risu["main"])])
    assert "(calm)" in characters.export_notes(stale)[0].render("en")
    report = node(
        "risuai_assets.mjs", _write(tmp_path, "stale.charx", characters.export_charx(engine, LOCAL_USER, stale.id))
    )
    assert "calm" not in resolved(report)


def test_a_kept_json_file_stays_inline_in_a_charx_which_risuai_reads_without_its_json_members(engine, tmp_path):
    state = json.dumps({"hp": 3}).encode()
    asset = {"type": "x_risu_state", "uri": cards.data_url(state, "json"), "name": "state", "ext": "json"}
    document = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Mira", "assets": [asset]}}
    draft = characters.read_card_file(json.dumps(document).encode(), "state.json")
    made = characters.create(
        engine, LOCAL_USER, draft.profile, [prepare_image(encode(Image.new("RGB", (8, 8)), "PNG"))]
    )
    exported = characters.export_charx(engine, LOCAL_USER, made.id)
    assert resolved(node("risuai_assets.mjs", _write(tmp_path, "state.charx", exported)))["state"] == (
        "x_risu_state",
        sha(state),
    )  # RisuAI skips every `.json` member but card.json: the bytes ride in the card instead
    with zipfile.ZipFile(io.BytesIO(exported)) as archive:
        assert [n for n in archive.namelist() if n.endswith(".json")] == ["card.json"]


def test_a_risuai_main_icon_in_a_chunk_is_the_main_picture_as_in_risuai(engine, risu, tmp_path) -> None:
    """A RisuAI V3 PNG whose main icon is `__asset:N` (not `ccdefault:`): RisuAI shows the chunk's picture."""
    portrait = encode(Image.new("RGB", (36, 48), (220, 180, 30)), "PNG")
    card = copy.deepcopy(risu["card"])
    card["data"]["assets"][-1]["uri"] = "__asset:5"
    raw = risu_png(risu["main"], card, {**risu["files"], 5: portrait})
    assert resolved(node("risuai_assets.mjs", _write(tmp_path, "icon.png", raw)))["main"][1] == sha(portrait)
    draft = characters.read_card_file(raw, "icon.png")
    assert draft.picture.data == prepare_image(portrait, "icon.png").data


def test_a_card_s_dates_are_kept_and_written_back_until_the_character_changes_here(engine, risu) -> None:
    raw = risu_png(risu["main"], risu["card"], risu["files"])
    draft = characters.read_card_file(raw, "mira.png")
    made = characters.create(engine, LOCAL_USER, draft.profile, [draft.picture])
    dates = {"creation_date": 1717000000, "modification_date": 1717100000}  # RisuAI's, in Unix seconds

    def exported_dates(character_id: int) -> dict:
        document = json.loads(
            base64.b64decode(png_text_chunks(characters.export_card(engine, LOCAL_USER, character_id))["ccv3"])
        )
        return {k: document["data"][k] for k in dates}

    assert exported_dates(made.id) == dates
    again = characters.create(engine, LOCAL_USER, characters.read_card_file(characters.export_card(
        engine, LOCAL_USER, made.id), "again.png").profile, [draft.picture])  # fmt: skip
    assert exported_dates(again.id) == dates  # our own card keeps them too
    changed = characters.update(engine, LOCAL_USER, again.id, {"personality": "Calmer now."})
    assert exported_dates(again.id) == {**dates, "modification_date": int(changed.updated_at.timestamp())}


def test_our_card_with_a_description_and_notes_past_the_limit_together_comes_back_whole(engine, neutral_png) -> None:
    description, notes = "d" * (MAX_TEXT * 3 // 4), "n" * (MAX_TEXT // 2)
    made = characters.create(engine, LOCAL_USER, {"name": "Mira", "description": description, "notes": notes},
                             [prepare_image(neutral_png, "mira.png")])  # fmt: skip
    exported = characters.export_card(engine, LOCAL_USER, made.id)
    draft = characters.read_card_file(exported, "mira.png")
    assert draft.warnings == () and (draft.profile["description"], draft.profile["notes"]) == (description, notes)
    # Changed in another app, and too long to keep whole: cut, and the notes kept, not lost with the cut.
    document = json.loads(base64.b64decode(png_text_chunks(exported)["ccv3"]))
    document["data"]["description"] += " Changed at the end, after the notes."
    draft = characters.read_card_file(json.dumps(document).encode(), "mira.json")
    assert len(draft.profile["description"]) == MAX_TEXT and draft.profile["notes"] == notes
    assert [w.key for w in draft.warnings] == ["card.warning.cut", "card.warning.description_changed_cut"]


def test_a_legacy_risuai_chunk_is_named_in_a_warning(neutral_png) -> None:
    raw = risu_png(neutral_png, risu_card([]), {}, {"risuai": b"x" * 300_000})
    said = [w.render("en") for w in characters.read_card_file(raw, "legacy.png").warnings]
    assert said == ["The card's “risuai” data (0.3 MB, written by an older RisuAI) is not read; it will not be in an "
                    "export."]  # fmt: skip


# -- SillyTavern: our card on its own ----------------------------------------------------------------------
def _profile(engine, character_id: int) -> dict:
    return Profile.model_validate(characters.get(engine, LOCAL_USER, character_id), from_attributes=True).model_dump()


def same_card(engine, again: int, made: int) -> None:
    """Every field as it was, and the card's dates: those of the character the card was made from, kept
    (in our extension, where nothing else of ours is) to be written back."""
    first, second = characters.get(engine, LOCAL_USER, made), characters.get(engine, LOCAL_USER, again)
    assert cards.card_dates(second) == cards.card_dates(first)
    assert second.extensions[NAMESPACE] == {"dates": cards.card_dates(first)}
    undated = _profile(engine, again)
    undated["extensions"] = {k: v for k, v in undated["extensions"].items() if k != NAMESPACE}
    assert undated == _profile(engine, made)


@pytest.mark.parametrize("description", ["", "Tall, silver hair in a braid, a blue lantern on her belt."])
def test_our_card_read_by_sillytavern_is_the_whole_character_and_comes_back_exactly(
    engine, neutral_png, tmp_path, description
) -> None:
    notes = "Keeps the northern light burning.\nAfraid of deep water; hums sea shanties."
    profile = {"name": "Mira", "notes": notes, "language": "Français", "description": description,
               "personality": "Calm.", "extensions": {"talkativeness": "0.5"}}  # fmt: skip
    made = characters.create(engine, LOCAL_USER, profile, [prepare_image(neutral_png, "mira.png")])
    exported = characters.export_card(engine, LOCAL_USER, made.id)
    read = node("sillytavern_card.mjs", _write(tmp_path, "mira.png", exported))
    assert read["chunk"] == "ccv3"
    told = read["card"]["description"]  # what SillyTavern puts into its prompt
    head = description or "{{char}} looks as the card's picture and its other reference images show."
    assert told == f"{head}\n\n{notes}\n\n{{{{char}}}} always speaks French (Français)."
    assert read["card"]["personality"] == "Calm." and read["card"]["name"] == "Mira"
    # The V2 chunk (for readers of `chara` only) says the same.
    chara = json.loads(base64.b64decode(png_text_chunks(exported)["chara"]))
    assert chara["data"]["description"] == chara["description"] == told
    # Back here: every field as it was, the notes once.
    draft = characters.read_card_file(exported, "mira.png")
    assert draft.warnings == ()
    again = characters.create(engine, LOCAL_USER, draft.profile, [draft.picture])
    same_card(engine, again.id, made.id)


def test_a_description_changed_in_another_app_keeps_the_notes_once(engine, neutral_png) -> None:
    made = characters.create(engine, LOCAL_USER, {"name": "Mira", "notes": "Hums shanties."},
                             [prepare_image(neutral_png, "mira.png")])  # fmt: skip
    document = json.loads(
        base64.b64decode(png_text_chunks(characters.export_card(engine, LOCAL_USER, made.id))["ccv3"])
    )
    edited = copy.deepcopy(document)
    edited["data"]["description"] = document["data"]["description"].replace("Hums", "Whistles")
    draft = characters.read_card_file(json.dumps(edited).encode(), "mira.json")
    assert draft.profile["description"] == edited["data"]["description"] and draft.profile["notes"] == ""
    assert [w.key for w in draft.warnings] == ["card.warning.description_changed"]
    # An older export of ours (the notes in our extension only, a copy of its V3 fields beside them)
    # still gives its notes back; the copy is read only where the card itself has no V3 fields.
    older = copy.deepcopy(document)
    older["data"]["description"] = "A keeper."
    stale = {"nickname": "M", "creation_date": 1, "modification_date": 2}
    older["data"]["extensions"][NAMESPACE] = {"notes": "Hums shanties.", "language": "English", "v3": stale}
    profile = characters.read_card_file(json.dumps(older).encode(), "old.json").profile
    assert (profile["description"], profile["notes"]) == ("A keeper.", "Hums shanties.")
    dates = {k: document["data"][k] for k in ("creation_date", "modification_date")}
    assert profile["extensions"][NAMESPACE] == {"dates": dates}  # the card's own (empty) nickname and dates win
    v2 = {"spec": "chara_card_v2", "data": {"name": "Mira", "extensions": {NAMESPACE: {"v3": stale}}}}
    profile = characters.read_card_file(json.dumps(v2).encode(), "old.json").profile
    assert profile["extensions"][NAMESPACE] == {"v3": {"nickname": "M"}}  # kept once, to give back as V3


# -- a card's picture behind a large compressed chunk ----------------------------------------------------------
def test_a_card_in_a_large_ztxt_chunk_keeps_its_own_picture(neutral_png) -> None:
    """Pillow refuses a PNG whose compressed text chunk inflates past 1 MB; the picture itself is fine."""
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Long", "description": "A very long story. " * 80_000}}  # fmt: skip
    payload = base64.b64encode(json.dumps(card).encode())
    assert len(payload) > 2**20
    main = [(k, d) for k, d in _chunks(neutral_png) if k != b"IEND"]
    raw = (neutral_png[:8] + b"".join(_chunk(k, d) for k, d in main)
           + _chunk(b"zTXt", b"chara\0\0" + zlib.compress(payload)) + _chunk(b"IEND", b""))  # fmt: skip
    draft = characters.read_card_file(raw, "long.png")
    assert draft.profile["description"].startswith("A very long story.")
    assert draft.picture_error is None and draft.picture is not None
    assert draft.picture.data == prepare_image(neutral_png, "long.png").data  # the same picture, pixel for pixel


def test_other_apps_pictures_show_labelled_on_create_and_in_the_editor(app_env, app_db, risu) -> None:
    from tests.conftest import new_app

    def labels(at) -> set[str]:
        return {caption for image in at.get("image") for caption in image.captions}

    at = new_app("pages/create.py")
    png = risu_png(risu["main"], risu["card"], risu["files"])
    at.file_uploader(key="card_0").set_value(("mira.png", png, "image/png")).run()
    assert not at.exception
    assert "Pictures from other apps" in [h.value for h in at.subheader]
    shown = labels(at)
    assert {"forest · x-risu-asset", "joy · emotion", "sad · emotion"} <= shown and not any("bell" in s for s in shown)
    next(b for b in at.button if b.label == "Create character").click().run()
    mira = next(iter(characters.names(app_db, LOCAL_USER)))
    editor = new_app("pages/library.py", edit=mira)
    assert "Pictures from other apps" in [h.value for h in editor.subheader]
    assert {"joy · emotion", "sad · emotion"} <= labels(editor)
