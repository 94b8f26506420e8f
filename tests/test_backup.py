"""Library backup and restore on real databases: the same rows and picture bytes back, nothing twice,
SQLite to PostgreSQL and back, a damaged or changed file refused with nothing stored, each person's
backup holding only their own rows, and the Library page's panel."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.base.sampling import SamplerSettings
from core.base.sheets import PreparedImage, prepare_image
from core.formats.archive import ArchiveError
from core.services import backup, characters, conversations, turns, users
from core.services.backup import BackupError, RestoreReport
from core.services.users import LOCAL_USER, Actor
from storage import characters as chars
from storage import conversations as convs
from storage.db import make_engine, migrate, session_scope
from storage.tables import Character, Conversation, Message, MessageStatus, User
from tests.conftest import SHARED, person

TABLES = ("app_user", "character", "sheetimage", "sheetimagebytes", "conversation", "message", "attachment",
          "attachmentbytes")  # fmt: skip


@pytest.fixture(scope="module")
def art() -> dict[str, PreparedImage]:
    """The shared character art, prepared as an upload is."""
    return {n: prepare_image((SHARED / "images" / f"seraphina_{n}.png").read_bytes(), f"{n}.png") for n in
            ("neutral", "joy")}  # fmt: skip


def fresh(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


@pytest.fixture
def other(tmp_path: Path):
    """A second, empty SQLite library."""
    engine = fresh(f"sqlite:///{tmp_path / 'other' / 'refsheet.db'}")
    yield engine
    engine.dispose()


def make_library(engine: Engine, actor: Actor, art: dict[str, PreparedImage], name: str = "Seraphina") -> dict:
    """A character with every kind of profile field and two real sheets; a conversation with greeting
    alternatives, a message with a picture, a reply with alternatives (the first chosen back), a failed
    reply and saved settings; a second character without conversations."""
    profile = {
        "name": name,
        "notes": "Guardian of the forest.\nSpeaks softly.",
        "language": "日本語",
        "first_mes": "Welcome, {{user}}.",
        "alternate_greetings": ["Hello again.", "Oh, it's you."],
        "personality": "kind",
        "tags": ["fantasy", "healer"],
        "creator": "someone",
        "extensions": {"depth_prompt": {"depth": 4, "prompt": "stay calm"}},
        "character_book": {"entries": [{"keys": ["glade"], "content": "A safe place.", "enabled": True}]},
    }
    character = characters.create(engine, actor, profile, [art["neutral"], art["joy"]])
    chat = conversations.start(engine, actor, character.id, "First meeting")
    conversations.save_sampler(engine, actor, chat.id, SamplerSettings(temperature=0.4, seed=7))
    turns.send(engine, actor, chat.id, "Where am I? 🌲", [art["joy"]])  # the same picture as a sheet
    with session_scope(engine) as s:
        reply = convs.append_message(s, chat.id, "assistant", "In my glade.")
        convs.update_message(s, reply.id, stats={"tokens": 4, "seconds": 0.5})
        convs.add_variant(s, chat.id, reply.turn, "Somewhere safe.", MessageStatus.COMPLETE)
        convs.add_variant(s, chat.id, reply.turn, "Half a", MessageStatus.PARTIAL)
        convs.choose_variant(s, chat.id, reply.turn, 0)
        failed = convs.append_message(s, chat.id, "assistant", "", status=MessageStatus.ERROR)
        convs.update_message(s, failed.id, error="model.error.oom")
    second = characters.create(engine, actor, {"name": f"{name}'s friend"}, [art["joy"]])
    return {"character": character.id, "chat": chat.id, "second": second.id}


def contents(engine: Engine) -> dict:
    """Every character and conversation by uid, as a viewer would compare them: profile, owner identity,
    images with their bytes in order, messages with their alternatives and attachments' bytes; no ids."""
    with Session(engine) as s:
        people = {u.id: (u.issuer, u.subject) for u in s.exec(select(User)).all()}
        uids = {c.id: c.uid for c in s.exec(select(Character)).all()}
        found: dict = {"characters": {}, "conversations": {}}
        for c in s.exec(select(Character)).all():
            images = [
                (i.position, i.original_name, i.mime_type, i.width, i.height, i.sha256, i.thumbnail, i.created_at, data)
                for i, data in chars.sheets(s, c.id)
            ]
            found["characters"][c.uid] = {**c.model_dump(exclude={"id", "owner_id"}), "owner": people[c.owner_id],
                                          "images": images}  # fmt: skip
        for conv in s.exec(select(Conversation)).all():
            stmt = select(Message).where(Message.conversation_id == conv.id).order_by(Message.turn, Message.variant)
            messages = [
                {**m.model_dump(exclude={"id", "conversation_id", "attachment_ids"}),
                 "attachments": [(a.original_name, a.sha256, a.thumbnail, a.created_at, data)
                                 for a, data in convs.attachment_pictures(s, m)]}
                for m in s.exec(stmt).all()
            ]  # fmt: skip
            found["conversations"][conv.uid] = {
                **conv.model_dump(exclude={"id", "character_id", "owner_id"}),
                "character": uids[conv.character_id],
                "owner": people[conv.owner_id],
                "messages": messages,
            }
        return found


def snapshot(engine: Engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT * FROM {t} ORDER BY 1")).all() for t in TABLES}


def members(raw: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rows(raw: bytes) -> bytes:
    """Every row of a backup, as text to search."""
    return b"".join(data for name, data in members(raw).items() if name.endswith((".json", ".jsonl")))


def rezip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def resigned(files: dict[str, bytes]) -> bytes:
    """The files with a manifest whose checksums match them again (what a careful forger would do)."""
    manifest = json.loads(files["manifest.json"])
    manifest["files"] = {n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in files.items()
                         if n != "manifest.json"}  # fmt: skip
    return rezip({**files, "manifest.json": json.dumps(manifest).encode()})


# -- round trips -----------------------------------------------------------------------------------
def test_backup_then_restore_into_an_empty_library_gives_the_same_rows_and_pictures(engine, other, art) -> None:
    make_library(engine, LOCAL_USER, art)
    started = time.perf_counter()
    raw = backup.backup(engine, LOCAL_USER)
    took = time.perf_counter() - started

    files = members(raw)
    manifest = json.loads(files["manifest.json"])
    assert (manifest["format"], manifest["version"], manifest["scope"]["everyone"]) == (
        "refsheet-chat-backup",
        1,
        False,
    )
    assert manifest["counts"] == {"characters": 2, "sheet_images": 3, "conversations": 1, "messages": 8,
                                  "attachments": 1, "users": 1, "image_files": 2}  # fmt: skip
    assert sorted(n for n in files if n.startswith("images/")) == sorted(
        f"images/{art[n].sha256}.png" for n in ("neutral", "joy")
    )  # each picture once, though the joy picture is two sheets and an attachment
    assert files[f"images/{art['joy'].sha256}.png"] == art["joy"].data
    assert set(manifest["files"]) == set(files) - {"manifest.json"}

    report = backup.restore(other, LOCAL_USER, raw, "backup.zip")
    assert report == RestoreReport(characters_added=2, conversations_added=1, messages_added=8, images_added=4)
    assert contents(other) == contents(engine)
    with Session(other) as s:  # the story reads the same: the first greeting and the first reply chosen
        (chat,) = s.exec(select(Conversation)).all()
        assert [m.text for m in convs.list_messages(s, chat.id)] == [
            "Welcome, {{user}}.", "Where am I? 🌲", "In my glade.", ""  # macros stay macros in storage
        ]  # fmt: skip
        assert conversations.sampler(chat) == SamplerSettings(temperature=0.4, seed=7)
    print(f"backup of the test library: {len(raw) / 1e3:.0f} kB in {took * 1e3:.0f} ms")


def test_restoring_twice_adds_nothing_the_second_time(engine, other, art) -> None:
    make_library(engine, LOCAL_USER, art)
    raw = backup.backup(engine, LOCAL_USER)
    backup.restore(other, LOCAL_USER, raw, "backup.zip")
    before = snapshot(other)
    again = backup.restore(other, LOCAL_USER, raw, "backup.zip")
    assert again == RestoreReport(characters_skipped=2, conversations_skipped=1)
    assert snapshot(other) == before


def test_restore_into_a_populated_library_adds_only_what_is_missing(engine, other, art) -> None:
    ids = make_library(engine, LOCAL_USER, art)
    backup.restore(other, LOCAL_USER, backup.backup(engine, LOCAL_USER), "monday.zip")
    own = characters.create(other, LOCAL_USER, {"name": "Only here"}, [art["neutral"]])
    # Since Monday: a new conversation with an old character, a new character, a message in an old chat.
    later = conversations.start(engine, LOCAL_USER, ids["second"])
    turns.send(engine, LOCAL_USER, later.id, "A new chat.")
    characters.create(engine, LOCAL_USER, {"name": "Newcomer"}, [art["neutral"]])

    report = backup.backup(engine, LOCAL_USER)
    result = backup.restore(other, LOCAL_USER, report, "tuesday.zip")
    assert result == RestoreReport(characters_added=1, characters_skipped=2, conversations_added=1,
                                   conversations_skipped=1, messages_added=1, images_added=1)  # fmt: skip
    mine, theirs = contents(engine), contents(other)
    assert theirs["conversations"] == mine["conversations"]
    assert {uid: theirs["characters"][uid] for uid in mine["characters"]} == mine["characters"]
    assert set(theirs["characters"]) - set(mine["characters"]) == {characters.get(other, LOCAL_USER, own.id).uid}


def test_a_sqlite_backup_restores_into_postgresql_and_back(engine, postgres_url: str, other, art) -> None:
    make_library(engine, LOCAL_USER, art)
    postgres = fresh(postgres_url)
    try:
        characters.create(postgres, LOCAL_USER, {"name": "Already there"}, [art["neutral"]])
        report = backup.restore(postgres, LOCAL_USER, backup.backup(engine, LOCAL_USER), "from-sqlite.zip")
        assert (report.characters_added, report.conversations_added, report.messages_added) == (2, 1, 8)
        mine = contents(engine)
        there = contents(postgres)
        assert there["conversations"] == mine["conversations"]
        assert {uid: there["characters"][uid] for uid in mine["characters"]} == mine["characters"]
        # The sequences still hand out free ids: rows made after the restore store fine.
        extra = characters.create(postgres, LOCAL_USER, {"name": "After"}, [art["joy"]])
        chat = conversations.start(postgres, LOCAL_USER, extra.id)
        turns.send(postgres, LOCAL_USER, chat.id, "Hello", [art["neutral"]])
        # And back: PostgreSQL's backup restores into a new SQLite library whole.
        backup.restore(other, LOCAL_USER, backup.backup(postgres, LOCAL_USER), "from-postgres.zip")
        assert contents(other) == contents(postgres)
    finally:
        postgres.dispose()


# -- refused files ---------------------------------------------------------------------------------
def _tampered(files: dict[str, bytes], how: str) -> tuple[bytes, str, str]:
    """A changed backup, the error code it must get and the member the message must name."""
    image = next(n for n in files if n.startswith("images/"))
    if how == "changed row":
        changed = files["characters.jsonl"].replace(b"Guardian", b"Guardien")
        return rezip({**files, "characters.jsonl": changed}), "checksum", "characters.jsonl"
    if how == "changed picture":
        data = bytearray(files[image])
        data[-20] ^= 0xFF
        return rezip({**files, image: bytes(data)}), "checksum", image
    if how == "missing picture":
        return rezip({n: d for n, d in files.items() if n != image}), "missing", image
    if how == "extra member":
        return rezip({**files, "images/extra.png": files[image]}), "unlisted", "images/extra.png"
    if how == "newer format":
        manifest = {**json.loads(files["manifest.json"]), "version": 99}
        return rezip({**files, "manifest.json": json.dumps(manifest).encode()}), "newer", ""
    if how == "no manifest":
        return rezip({n: d for n, d in files.items() if n != "manifest.json"}), "not_backup", ""
    if how == "bad row, checksums redone":
        lines = files["conversations.jsonl"].splitlines()
        row = json.loads(lines[0])
        row["messages"][0]["role"] = "villain"
        return resigned({**files, "conversations.jsonl": json.dumps(row).encode()}), "bad_rows", "conversations.jsonl"
    if how == "another picture, checksums redone":
        other = next(n for n in files if n.startswith("images/") and n != image)
        return resigned({**files, image: files[other]}), "checksum", image
    if how == "not a picture, checksums redone":
        name = next(n for n in files if n.startswith("thumbnails/"))
        return resigned({**files, name: b"<script>alert(1)</script>"}), "bad_image", name
    if how == "truncated picture, checksums redone":  # a valid header: only decoding every pixel finds it
        return _with_row_checksum(resigned({**files, image: files[image][: len(files[image]) // 2]}), image)
    if how == "truncated thumbnail, checksums redone":
        name = next(n for n in files if n.startswith("thumbnails/"))
        return resigned({**files, name: files[name][: len(files[name]) * 2 // 3]}), "bad_image", name
    if how == "deeply nested row, checksums redone":
        deep = b"[" * 100_000 + b"]" * 100_000
        return resigned({**files, "conversations.jsonl": deep}), "bad_rows", "conversations.jsonl"
    if how == "settings not numbers, checksums redone":
        changed = files["conversations.jsonl"].replace(b'"temperature":0.4', b'"temperature":"hot"')
        return resigned({**files, "conversations.jsonl": changed}), "bad_rows", "conversations.jsonl"
    if how == "figures not plain, checksums redone":
        changed = files["conversations.jsonl"].replace(b'"tokens":4', b'"tokens":["![x](//evil.test)"]')
        assert changed != files["conversations.jsonl"]
        return resigned({**files, "conversations.jsonl": changed}), "bad_rows", "conversations.jsonl"
    if how == "NaN in a row, checksums redone":
        changed = files["conversations.jsonl"].replace(b'"temperature":0.4', b'"temperature":NaN')
        assert changed != files["conversations.jsonl"]
        return resigned({**files, "conversations.jsonl": changed}), "bad_rows", "conversations.jsonl"
    raise AssertionError(how)


def _with_row_checksum(raw: bytes, image: str) -> tuple[bytes, str, str]:
    """The rows' sha256 for `image` redone too, so only the picture's own bytes are wrong."""
    files = members(raw)
    old = image.removeprefix("images/").split(".")[0]
    new = hashlib.sha256(files[image]).hexdigest()
    renamed = image.replace(old, new)
    files = {renamed if n == image else n: d for n, d in files.items()}
    for member in ("characters.jsonl", "conversations.jsonl"):
        files[member] = files[member].replace(old.encode(), new.encode())
    return resigned(files), "bad_image", renamed


@pytest.mark.parametrize(
    "how",
    ["changed row", "changed picture", "missing picture", "extra member", "newer format", "no manifest",
     "bad row, checksums redone", "another picture, checksums redone", "not a picture, checksums redone",
     "truncated picture, checksums redone", "truncated thumbnail, checksums redone",
     "deeply nested row, checksums redone", "NaN in a row, checksums redone", "settings not numbers, checksums redone",
     "figures not plain, checksums redone"],
)  # fmt: skip
def test_a_damaged_or_changed_backup_is_refused_naming_the_member_and_nothing_is_stored(
    engine, other, art, how: str
) -> None:
    make_library(engine, LOCAL_USER, art)
    characters.create(other, LOCAL_USER, {"name": "Mine"}, [art["neutral"]])
    raw, code, member = _tampered(members(backup.backup(engine, LOCAL_USER)), how)
    before = snapshot(other)
    with pytest.raises(BackupError) as refused:
        backup.restore(other, LOCAL_USER, raw, "backup.zip")
    assert refused.value.code == code
    for lang in ("en", "zh"):
        message = refused.value.message(lang)
        assert "backup.zip" in message and member in message
    assert "Nothing was restored" in refused.value.message("en")
    assert snapshot(other) == before


def test_a_restored_row_is_never_in_the_future_nor_being_written(engine, other, art) -> None:
    """A backup's times are capped at now (a row dated 2999 would sort first in everyone's lists for
    ever) and a reply that was being written when it was made is unfinished, not being written."""
    ids = make_library(engine, LOCAL_USER, art)
    with session_scope(engine) as s:
        writing = convs.append_message(s, ids["chat"], "assistant", "half a", status=MessageStatus.WRITING)
    files = members(backup.backup(engine, LOCAL_USER))
    future = {name: files[name].replace(b'"updated_at":"20', b'"updated_at":"29') for name in
              ("characters.jsonl", "conversations.jsonl")}  # fmt: skip
    backup.restore(other, LOCAL_USER, resigned({**files, **future}), "future.zip")
    with Session(other) as s:
        for row in (*s.exec(select(Character)).all(), *s.exec(select(Conversation)).all()):
            assert row.updated_at.year < 2900
        (chat,) = s.exec(select(Conversation)).all()
        last = convs.list_messages(s, chat.id)[-1]
        assert (last.text, last.status) == (writing.text, "partial")


def test_a_zip_with_two_members_of_one_name_is_refused_as_such(engine, other, art) -> None:
    make_library(engine, LOCAL_USER, art)
    files = members(backup.backup(engine, LOCAL_USER))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("users.json", b"[]")
    before = snapshot(other)
    with pytest.raises(ArchiveError) as refused:
        backup.restore(other, LOCAL_USER, out.getvalue(), "twice.zip")
    assert refused.value.code == "duplicate" and "two files named “users.json”" in refused.value.message("en")
    assert snapshot(other) == before


def test_a_file_that_is_not_a_zip_is_refused(other, neutral_png: bytes) -> None:
    before = snapshot(other)
    with pytest.raises(ArchiveError) as refused:
        backup.restore(other, LOCAL_USER, neutral_png, "holiday.png")
    assert refused.value.code == "not_zip" and "holiday.png" in refused.value.message("zh")
    assert snapshot(other) == before


def test_a_failure_while_writing_stores_nothing(engine, other, art, monkeypatch: pytest.MonkeyPatch) -> None:
    """All or nothing: the characters and pictures written before the failure are rolled back too."""
    make_library(engine, LOCAL_USER, art)
    raw = backup.backup(engine, LOCAL_USER)
    before = snapshot(other)

    def broken(session, values) -> None:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(backup.store, "add_messages", broken)
    with pytest.raises(RuntimeError):
        backup.restore(other, LOCAL_USER, raw, "backup.zip")
    assert snapshot(other) == before


# -- teams -----------------------------------------------------------------------------------------
@pytest.fixture
def team(engine, art):
    """Alice (a private and a shared character, a chat), Bob (a private character, a chat with it and
    one with Alice's shared character), Carol (an admin); Alice and Bob have personas."""
    alice, bob, carol = person(engine, "alice"), person(engine, "bob"), person(engine, "carol")
    make_library(engine, alice, art, "Alice secret")
    shared = characters.create(engine, alice, {"name": "Alice shared"}, [art["joy"]])
    characters.share(engine, alice, shared.id, True)
    bobs = characters.create(engine, bob, {"name": "Bob secret", "notes": "Bob's private notes"}, [art["neutral"]])
    turns.send(engine, bob, conversations.start(engine, bob, bobs.id).id, "Bob's private words")
    turns.send(engine, bob, conversations.start(engine, bob, shared.id).id, "Bob talks to Alice's character")
    with session_scope(engine) as s:
        for actor, persona in ((alice, "Alinor"), (bob, "Bobbington")):
            user = s.get(User, actor.id)
            user.persona_name, user.persona_description = persona, f"{persona} likes tea."
    return alice, bob, carol


def test_each_person_backs_up_their_own_and_an_admin_no_more(engine, team) -> None:
    alice, bob, carol = team
    texts = {who: backup.backup(engine, who) for who in (alice, bob, carol)}
    alices, bobs, carols = (rows(texts[who]) for who in (alice, bob, carol))
    for secret in (b"Bob secret", b"Bob's private notes", b"Bob's private words", b"bob@example.test", b"Bobbington"):
        assert secret not in alices
        assert secret not in carols  # an admin moderates characters; nobody's backup holds another's words
    for secret in (b"Alice secret", b"Guardian of the forest", b"Where am I?", b"alice@example.test", b"Alinor"):
        assert secret not in bobs
        assert secret not in carols
    assert b"Alice shared" not in bobs  # only its uid, for his conversation with it
    bob_rows = members(texts[bob])
    assert len(bob_rows["characters.jsonl"].splitlines()) == 1
    assert len(bob_rows["conversations.jsonl"].splitlines()) == 2
    manifest = json.loads(members(texts[carol])["manifest.json"])
    assert manifest["scope"]["everyone"] is False and manifest["counts"]["users"] == 1


def test_after_un_sharing_a_backup_leaves_out_conversations_with_the_character(engine, team) -> None:
    alice, bob, _ = team
    shared = next(s.id for s in characters.summaries(engine, alice) if s.name == "Alice shared")
    characters.share(engine, alice, shared, False)
    bob_rows = members(backup.backup(engine, bob))
    assert len(bob_rows["conversations.jsonl"].splitlines()) == 1  # the one with his own character
    assert b"Bob talks to Alice" not in rows(backup.backup(engine, bob))


def test_restoring_as_a_person_makes_it_theirs_and_leaves_out_what_they_may_not_see(engine, team, tmp_path) -> None:
    _, bob, _ = team
    elsewhere = fresh(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    try:
        dave = person(elsewhere, "dave")
        report = backup.restore(elsewhere, dave, backup.backup(engine, bob), "bob.zip")
        # Alice's shared character is not in Bob's backup and not in this library: his chat with it stays out.
        assert (report.characters_added, report.conversations_added, report.conversations_unattached) == (1, 1, 1)
        with Session(elsewhere) as s:
            assert {c.owner_id for c in s.exec(select(Character)).all()} == {dave.id}
            assert {c.owner_id for c in s.exec(select(Conversation)).all()} == {dave.id}
            assert s.get(User, dave.id).persona_name == "Bobbington"  # an empty persona takes the backup's
        # Into the same library: Bob's chat with Alice's shared character attaches to it.
        engine_report = backup.restore(engine, bob, backup.backup(engine, bob), "bob.zip")
        assert engine_report == RestoreReport(characters_skipped=1, conversations_skipped=2)
    finally:
        elsewhere.dispose()


def test_a_persons_interface_language_is_in_their_backup(engine, team, tmp_path) -> None:
    """The language someone chose goes with their backup, and fills a library whose person has chosen none."""
    _, bob, _ = team
    users.save_language(engine, bob, "zh")
    saved = backup.backup(engine, bob)
    assert [u["ui_language"] for u in json.loads(members(saved)["users.json"])] == ["zh"]
    elsewhere = fresh(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    try:
        dave, erin = person(elsewhere, "dave"), person(elsewhere, "erin")
        users.save_language(elsewhere, erin, "en")
        for who in (dave, erin):
            backup.restore(elsewhere, who, saved, "bob.zip")
        with Session(elsewhere) as s:
            chosen = (s.get(User, dave.id).ui_language, s.get(User, erin.id).ui_language)
        assert chosen == ("zh", "en")  # a choice already made stays
    finally:
        elsewhere.dispose()


def test_every_column_of_a_row_is_in_the_backup() -> None:
    """The backup's entries take their fields from the tables' field sets, so a column added there is
    backed up too; only keys (ids, owners), sign-out bookkeeping and thumbnails (a file) stay out."""
    from core.formats import backup as fmt
    from storage.tables import CharacterFields, ConversationFields, SheetImage

    kept_out = {"id", "owner_id", "character_id", "conversation_id", "attachment_ids", "thumbnail", "latest_iat",
                "signed_out_iat"}  # fmt: skip
    entries = {User: fmt.UserEntry, Message: fmt.MessageEntry, SheetImage: fmt.SheetEntry}
    for table, entry in entries.items():
        assert set(table.model_fields) - kept_out <= set(entry.model_fields), table
    character = set(fmt.CharacterEntry.model_fields) | set(fmt.Profile.model_fields)  # the profile, nested
    assert set(Character.model_fields) - kept_out <= character
    assert set(Conversation.model_fields) - kept_out <= set(fmt.ConversationEntry.model_fields)
    assert issubclass(fmt.CharacterEntry, CharacterFields) and issubclass(fmt.ConversationEntry, ConversationFields)


def test_the_operators_whole_server_backup_restores_everyone_to_their_owners(
    engine, db_url: str, team, other, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`python -m core.services.server_backup`, run on the server with the app's settings: the only way to a
    backup of everyone's conversations, and the only way to restore one."""
    from core.services import server_backup

    *_, carol = team
    file = tmp_path / "whole-server.zip"
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert server_backup.main(["backup", str(file)]) == 0
    assert "Wrote" in (said := capsys.readouterr().out) and "3 conversations" in said
    assert file.stat().st_mode & 0o777 == 0o600  # everyone's conversations: the operator's eyes only
    good = file.read_bytes()
    monkeypatch.setattr(backup.fmt, "conversation_entry", lambda *a: 1 / 0)  # a run that fails half-way…
    with pytest.raises(ZeroDivisionError):
        server_backup.main(["backup", str(file)])
    monkeypatch.undo()
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert file.read_bytes() == good and not list(tmp_path.glob(".*.tmp"))  # …leaves the last backup whole
    assert server_backup.main(["restore", str(tmp_path / "missing.zip")]) == 1
    assert "No such file" in capsys.readouterr().err
    everything = rows(file.read_bytes())
    for secret in (b"Bob secret", b"Bob's private words", b"Alice secret", b"Where am I?", b"Alice shared"):
        assert secret in everything
    before = snapshot(other)
    with pytest.raises(BackupError) as refused:  # not through a page, not even an admin's
        backup.restore(other, carol, file.read_bytes(), "whole-server.zip")
    assert refused.value.code == "whole_server"
    assert "python -m core.services.server_backup" in refused.value.message("en")
    assert snapshot(other) == before

    monkeypatch.setenv("DATABASE_URL", str(other.url.render_as_string(hide_password=False)))
    assert server_backup.main(["restore", str(file)]) == 0
    assert contents(other) == contents(engine)
    with Session(other) as s:
        personas = {u.subject: u.persona_name for u in s.exec(select(User).where(col(User.issuer) != "local")).all()}
        assert personas == {"alice": "Alinor", "bob": "Bobbington", "carol": ""}


# -- the migration that gave existing rows their uids ----------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def any_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return request.getfixturevalue("postgres_url")


def test_migration_0004_gives_existing_characters_and_conversations_distinct_uids(any_url: str) -> None:
    engine = make_engine(any_url)
    try:
        migrate(engine, "0003")
        character = (
            "INSERT INTO character (owner_id, shared, name, notes, language, description, personality, scenario, "
            "first_mes, alternate_greetings, mes_example, system_prompt, post_history_instructions, creator_notes, "
            "tags, creator, character_version, extensions, character_book, created_at, updated_at) VALUES (1, "
            ":no, :name, '', 'English', '', '', '', '', '[]', '', '', '', '', '[]', '', '', '{}', NULL, :now, :now)"
        )
        conversation = (
            "INSERT INTO conversation (character_id, owner_id, title, settings, created_at, updated_at) "
            "VALUES ((SELECT id FROM character WHERE name = :name), 1, '', '{}', :now, :now)"
        )
        now = "2026-11-01 10:00:00"
        with engine.begin() as conn:  # the database numbers them, as the app did (its sequences stay right)
            for name in ("C1", "C2", "C3"):
                conn.execute(text(character), {"no": False, "name": name, "now": now})
                for _ in range(2):
                    conn.execute(text(conversation), {"name": name, "now": now})
        migrate(engine)
        with Session(engine) as s:
            for table, count in ((Character, 3), (Conversation, 6)):
                uids = [row.uid for row in s.exec(select(table)).all()]
                assert len(set(uids)) == count and all(len(u) == 32 and int(u, 16) >= 0 for u in uids)
            assert s.get(User, 1).persona_name == ""
        made = characters.create(engine, LOCAL_USER, {"name": "New"}, [prepare_image(_png(), "x.png")])
        assert len(made.uid) == 32
    finally:
        engine.dispose()


def _png() -> bytes:
    from PIL import Image

    from tests.conftest import encode

    return encode(Image.new("RGB", (32, 32), "red"), "PNG")


# -- the Library page ------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_library_page_restores_a_backup_and_lists_it(tmp_path, monkeypatch, other, art) -> None:
    from tests.conftest import new_app

    data = tmp_path / "app"
    monkeypatch.setenv("REFSHEET_DATA_DIR", str(data))
    monkeypatch.setenv("REFSHEET_MODEL", str(tmp_path / "no-model-needed"))
    monkeypatch.setenv("REFSHEET_DEVICE", "cpu")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    make_library(other, LOCAL_USER, art)
    raw = backup.backup(other, LOCAL_USER)

    at = new_app("pages/library.py")
    assert any(e.label == "Backup and restore" for e in at.expander)
    assert [b for b in at.get("download_button") if b.proto.label == "Download a backup"]
    at.file_uploader(key="backup_upload").set_value(("team.zip", raw, "application/zip")).run()
    next(b for b in at.button if b.key == "backup_restore").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any("2 characters added" in s.value and "8 messages" in s.value for s in at.success)
    assert any("Seraphina" in m.value for m in at.markdown)
