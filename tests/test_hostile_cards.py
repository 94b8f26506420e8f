"""Hostile character cards and images: every input ends as a stored character or one clear error of
ours, never another exception and never a half-stored row, on SQLite and PostgreSQL.

The named cases are the faults found by hand; the properties (Hypothesis) throw random bytes, mutated
real PNG/JPEG/WebP/GIF files and random JSON card documents at card reading, card import into
storage and image intake. What the properties found is kept below as regular cases.
"""

from __future__ import annotations

import base64
import json
import struct
import tracemalloc
import zlib

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from sqlalchemy import text

from core.base.errors import UserError
from core.base.sheets import ImageLimits, ImageRejected, prepare_image
from core.formats import cards
from core.formats.cards import (
    MAX_ASSETS,
    MAX_CARD_BYTES,
    MAX_KEPT_ASSETS,
    CardError,
    asset_bytes,
    import_card,
    read_card,
)
from core.services import characters
from core.services.users import LOCAL_USER
from tests.conftest import encode

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
TABLES = ("character", "sheetimage", "sheetimagebytes")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'refsheet.db'}"
    return request.getfixturevalue("postgres_url")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_card(
    document: object, side: tuple[int, int] = (8, 8), kind: bytes = b"tEXt", raw: bytes | None = None
) -> bytes:
    """A PNG carrying `document` as a `chara` chunk; `side` may declare any size (pixels are not written)."""
    payload = raw if raw is not None else base64.b64encode(json.dumps(document).encode())
    data = b"chara\0" + (b"\0" + zlib.compress(payload) if kind == b"zTXt" else payload)
    header = struct.pack(">IIBBBBB", *side, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(kind, data)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def _mutate(seed: bytes, cut: int, flips: list[tuple[int, int]], junk: bytes) -> bytes:
    data = bytearray(seed[:cut] + junk + seed[cut:])
    for at, value in flips:
        if at < len(data):
            data[at] = value
    return bytes(data)


def v2(**data) -> dict:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Hostile", **data}}


def stored_or_refused(engine, raw: bytes) -> str:
    """What a user gets for `raw` on Create: a stored character, or one of our errors (and nothing stored)."""
    before = _counts(engine)
    try:
        draft = characters.read_card_file(raw, "card.png", ImageLimits(max_pixels=4_000_000))
        image = draft.picture or prepare_image(encode(Image.new("RGB", (16, 16), "white"), "PNG"), "sheet.png")
        made = characters.create(engine, LOCAL_USER, draft.profile, [image])
    except UserError:
        assert _counts(engine) == before  # refused whole: not a row more
        return "refused"
    assert characters.get(engine, LOCAL_USER, made.id).name == made.name  # and it reads back
    characters.export_card(engine, LOCAL_USER, made.id)  # and exports as a strict card
    return "stored"


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES}


# -- the faults found by hand ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "check"),
    [
        ({"alternate_greetings": 5}, lambda p, w: p["alternate_greetings"] == [] and "alternate_greetings" in w),
        ({"alternate_greetings": "Hello there!"}, lambda p, w: p["alternate_greetings"] == ["Hello there!"]),
        ({"tags": "fantasy, elf"}, lambda p, w: p["tags"] == ["fantasy", "elf"] and "split" in w),
        ({"extensions": "not an object"}, lambda p, w: p["extensions"] == {} and "extensions" in w),
        ({"extensions": ["a", "list"]}, lambda p, w: p["extensions"] == {} and "extensions" in w),
        ({"name": "Bad\ud800Name"}, lambda p, w: p["name"] == "Bad\ufffdName"),
        ({"description": "nul\x00here"}, lambda p, w: p["description"] == "nulhere"),
        ({"name": "N" * 100_000}, lambda p, w: len(p["name"]) == 200 and "200" in w),
        ({"character_book": [{"keys": ["glade"], "content": "Safe."}]},
         lambda p, w: p["character_book"]["entries"][0]["keys"] == ["glade"] and "bare list" in w),
        ({"character_book": {"entries": [{"content": "no keys"}, {"keys": ["k"], "content": "ok"}]}},
         lambda p, w: "1 entries" in w or "1 entry" in w),
    ],
)  # fmt: skip
def test_each_field_is_coerced_or_left_out_saying_which(data: dict, check) -> None:
    imported = import_card(read_card(json.dumps(v2(**data)).encode(), "card.json"))
    said = " ".join(t.render("en") for t in imported.warnings)
    assert check(imported.profile, said), (imported.profile, said)


def test_nan_and_infinity_never_reach_storage_or_an_export(engine) -> None:
    raw = b'{"spec": "chara_card_v2", "data": {"name": "Nan", "extensions": {"x": NaN}}}'
    with pytest.raises(CardError):  # strict JSON: NaN is not a number a card can carry
        read_card(raw, "card.json")
    character = characters.create(engine, LOCAL_USER, {"name": "Nan", "extensions": {"x": float("nan")}},
                                  [prepare_image(encode(Image.new("RGB", (8, 8)), "PNG"))])  # fmt: skip
    exported = read_card(characters.export_card(engine, LOCAL_USER, character.id))
    assert exported.data["extensions"]["x"] is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"spec": "chara_card_v2", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too_deep"),
        (png_card(None, raw=b"A" * (20 * 2**20), kind=b"zTXt"), "too_large"),
        (_mutate(png_card(v2()), 0, [(47, 128)], b""), "unreadable"),  # found by fuzzing: a non-ASCII byte in base64
        (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", b"\0" * 13) + b"\0\0\x01\0tEXt" + b"chara\0", "unreadable"),
    ],
)
def test_unreadable_cards_say_why(raw: bytes, code: str) -> None:
    with pytest.raises(CardError) as info:
        read_card(raw, "card.png")
    assert info.value.code == code and "card.png" in str(info.value)


def with_chunks(png: bytes, *chunks: bytes) -> bytes:
    """The PNG with more chunks just before its IEND."""
    return png[:-12] + b"".join(chunks) + png[-12:]


def test_many_compressed_chunks_are_refused_together_before_they_take_the_memory() -> None:
    """Each zTXt chunk inflates to just under the limit for one chunk: 40 of them are 640 MB of text in
    a 0.6 MB file. Chunks of a keyword no card is read from are never inflated at all."""
    bomb = zlib.compress(b"A" * (MAX_CARD_BYTES - 16), 9)
    raw = with_chunks(png_card(v2()), *(_chunk(b"zTXt", b"chara-ext-asset_:%d\0\0" % i + bomb) for i in range(40)))
    assert len(raw) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(CardError) as info:
            read_card(raw, "bomb.png")
        assert info.value.code == "too_much_text" and "bomb.png" in str(info.value)
        assert tracemalloc.get_traced_memory()[1] < 4 * MAX_CARD_BYTES  # the budget, not 40 chunks' worth
        unread = with_chunks(png_card(v2()), *(_chunk(b"zTXt", b"comment%d\0\0" % i + bomb) for i in range(8)))
        tracemalloc.reset_peak()
        held = tracemalloc.get_traced_memory()[0]
        assert read_card(unread, "quiet.png").data["name"] == "Hostile"
        assert tracemalloc.get_traced_memory()[1] - held < MAX_CARD_BYTES // 4
    finally:
        tracemalloc.stop()


def test_assets_naming_one_chunk_decode_it_once_and_a_chunk_past_the_budget_never(monkeypatch) -> None:
    """Thousands of assets may name one `__asset:N` chunk: it is decoded once (not once per asset), one
    larger than what may be kept is not decoded at all, and past MAX_ASSETS the rest are not read."""
    decoded = []

    def counted(uri, files, embedded=None):
        decoded.append(uri)
        return asset_bytes(uri, files, embedded)

    monkeypatch.setattr(cards, "asset_bytes", counted)
    small, large = b"s" * 1_000, b"L" * (MAX_KEPT_ASSETS + 1)
    assets = [{"type": "x-risu-asset", "uri": f"__asset:{1 + i % 2}", "name": f"a{i}", "ext": "bin"}
              for i in range(MAX_ASSETS + 500)]  # fmt: skip
    document = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Refs", "assets": assets}}
    files = (
        _chunk(b"tEXt", b"chara-ext-asset_:%d\0" % n + base64.b64encode(data)) for n, data in ((1, small), (2, large))
    )
    imported = import_card(read_card(with_chunks(png_card(document), *files), "refs.png"))
    assert decoded == ["__asset:1"]  # once, and the chunk past the budget never
    kept = imported.profile["extensions"]["refsheet_chat"]["v3"]["assets"]
    assert len(kept) == MAX_ASSETS // 2 and {a["name"] for a in kept} == {f"a{i}" for i in range(0, MAX_ASSETS, 2)}
    said = [w.render("en") for w in imported.warnings]
    assert f"has {MAX_ASSETS + 500} items" in said[0] and f"the first {MAX_ASSETS} were read" in said[0]
    assert said[1].startswith(f"{MAX_ASSETS // 2} of the card's other assets (a1, a3, a5") and len(said[1]) < 600


def test_a_card_on_a_picture_too_large_to_open_still_gives_its_card(engine) -> None:
    raw = png_card(v2(description="A giant."), side=(20_000, 20_000))
    draft = characters.read_card_file(raw, "giant.png")
    assert draft.profile["description"] == "A giant." and draft.picture is None
    assert "20000×20000 (400 megapixels)" in str(draft.picture_error)
    assert stored_or_refused(engine, raw) == "stored"  # with a sheet of its own


def test_hostile_values_store_on_every_database(engine) -> None:
    """NUL, lone surrogates and a 100k-character name: PostgreSQL refused each before they were cleaned."""
    book = {"entries": [{"keys": ["\x00k"], "content": "c"}]}
    card = v2(name="N" * 100_000 + "\x00", description="\ud800 and \x00", tags=["a\x00b"],
              extensions={"deep": {"nul": "\x00"}}, character_book=book)  # fmt: skip
    assert stored_or_refused(engine, png_card(card)) == "stored"


# -- the properties ---------------------------------------------------------------------------------------
_JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
_FIELDS = ("name", "description", "personality", "first_mes", "alternate_greetings", "tags", "extensions",
           "character_book", "creator_notes_multilingual", "mes_example", "creator")  # fmt: skip
_CARDS = st.builds(
    lambda spec, data: {"spec": spec, "spec_version": "2.0", "data": data},
    st.sampled_from(["chara_card_v2", "chara_card_v3"]),
    st.dictionaries(st.sampled_from(_FIELDS), _JSON, max_size=len(_FIELDS)),
)


@FUZZ
@given(document=_CARDS)
@example(document={"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": 0}})
@example(document={"spec": "chara_card_v3", "spec_version": "2.0", "data": {"creator_notes_multilingual": []}})
@example(document={"spec": "chara_card_v2", "spec_version": "2.0", "data": {"character_book": {"entries": 0}}})
def test_any_card_document_is_stored_or_refused_whole(engine, document: dict) -> None:
    assert stored_or_refused(engine, png_card(document)) in ("stored", "refused")


@FUZZ
@given(raw=st.binary(max_size=2048))
def test_any_bytes_are_a_card_or_a_clear_no(raw: bytes) -> None:
    try:
        read_card(raw, "x")
    except CardError as exc:
        assert exc.message("zh") and exc.message("en")


def _mutated(seed: bytes):
    return st.builds(lambda cut, flips, junk: _mutate(seed, cut, flips, junk), st.integers(0, len(seed)),
                     st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 255)), max_size=8),
                     st.binary(max_size=16))  # fmt: skip


_CARD_SEED = png_card(v2(description="Seed", tags=["a"], alternate_greetings=["b"]))


@FUZZ
@given(raw=_mutated(_CARD_SEED))
def test_any_damaged_card_png_is_read_or_refused_clearly(engine, raw: bytes) -> None:
    assert stored_or_refused(engine, raw) in ("stored", "refused")


_IMAGE_SEEDS = {fmt: encode(Image.new("RGB", (24, 16), (200, 80, 120)), fmt) for fmt in ("PNG", "JPEG", "WEBP", "GIF")}


@FUZZ
@given(
    raw=st.sampled_from(sorted(_IMAGE_SEEDS)).flatmap(lambda fmt: _mutated(_IMAGE_SEEDS[fmt])) | st.binary(max_size=512)
)
def test_any_upload_is_an_image_or_a_clear_no(raw: bytes) -> None:
    try:
        prepared = prepare_image(raw, "upload.bin", ImageLimits(max_pixels=4_000_000))
    except ImageRejected as exc:
        assert exc.message("zh") and exc.message("en")
    else:
        assert prepared.width > 0 and prepared.data.startswith(b"\x89PNG")
