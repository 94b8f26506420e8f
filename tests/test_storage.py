"""Storage against real databases: round trips, restarts, cascades, migrations, concurrency.

Every test that is not about SQLite itself runs twice: on a SQLite file and on a real PostgreSQL server
(any SQLAlchemy URL must work; see `postgres_server` in conftest)."""

from __future__ import annotations

import threading

import pytest
from PIL import Image
from sqlalchemy import inspect, text
from sqlmodel import Session, func, select

from core.base.sheets import prepare_image
from storage import characters as chars
from storage import conversations as convs
from storage import users
from storage.db import current_revision, make_engine, migrate, session_scope
from storage.tables import (
    LOCAL_USER_ID,
    Attachment,
    Character,
    Conversation,
    Message,
    MessageStatus,
    Role,
    SheetImage,
)
from tests.conftest import encode

TABLES = {"character", "sheetimage", "conversation", "message", "attachment", "app_user", "sheetimagebytes",
          "attachmentbytes"}  # fmt: skip
OLD_TABLES = TABLES - {"app_user", "sheetimagebytes", "attachmentbytes"}  # what the initial revision had


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'refsheet.db'}"
    return request.getfixturevalue("postgres_url")


def _image(colour: str = "red", size: tuple[int, int] = (64, 48)):
    return prepare_image(encode(Image.new("RGB", size, colour), "PNG"), f"{colour}.png")


def _populate(engine) -> dict[str, int]:
    """One of everything; returns the ids."""
    with session_scope(engine) as s:
        c = chars.create_character(
            s,
            [_image("red"), _image("blue")],
            name="Seraphina",
            notes="Guardian of the forest",
            language="日本語",
            personality="kind",
            alternate_greetings=["Hello!", "Welcome back."],
            tags=["fantasy", "healer"],
            extensions={"depth_prompt": {"depth": 4}},
            character_book={"entries": [{"keys": ["glade"], "content": "A safe place."}]},
        )
        conv = convs.create_conversation(s, c.id, "First meeting", {"temperature": 0.7})
        att = convs.add_attachment(s, conv.id, _image("green"))
        m0 = convs.append_message(s, conv.id, Role.ASSISTANT, "Welcome, traveller.")
        m1 = convs.append_message(s, conv.id, Role.USER, "Where am I?", attachment_ids=[att.id])
        m2 = convs.append_message(s, conv.id, Role.ASSISTANT, "In my glade.", status=MessageStatus.PARTIAL)
        return {"character": c.id, "conversation": conv.id, "attachment": att.id, "m0": m0.id, "m1": m1.id, "m2": m2.id}


def test_every_table_round_trips_and_survives_a_restart(engine, db_url: str) -> None:
    ids = _populate(engine)
    engine.dispose()
    restarted = make_engine(db_url)  # a new process would do exactly this
    migrate(restarted)
    with Session(restarted) as s:
        c = s.get(Character, ids["character"])
        assert (c.name, c.notes, c.language, c.personality) == ("Seraphina", "Guardian of the forest", "日本語", "kind")
        assert c.alternate_greetings == ["Hello!", "Welcome back."] and c.tags == ["fantasy", "healer"]
        assert c.extensions == {"depth_prompt": {"depth": 4}} and c.character_book["entries"][0]["keys"] == ["glade"]
        images = chars.sheets(s, c.id)
        assert [i.original_name for i, _ in images] == ["red.png", "blue.png"] and images[0].data.startswith(b"\x89PNG")
        conv = s.get(Conversation, ids["conversation"])
        assert (conv.title, conv.settings) == ("First meeting", {"temperature": 0.7})
        messages = convs.list_messages(s, conv.id)
        assert [(m.role, m.text, m.status) for m in messages] == [
            ("assistant", "Welcome, traveller.", "complete"),
            ("user", "Where am I?", "complete"),
            ("assistant", "In my glade.", "partial"),
        ]
        assert messages[1].attachment_ids == [ids["attachment"]]
        assert convs.get_attachments(s, messages[1])[0].width == 64
        assert messages[0].created_at.tzinfo is not None


def test_list_returns_thumbnails_search_and_counts(engine) -> None:
    ids = _populate(engine)
    with session_scope(engine) as s:
        chars.create_character(s, [_image("white")], name="Bob", notes="a plain sailor")
    with Session(engine) as s:
        everyone = chars.list_characters(s)
        assert [c.name for c in everyone] == ["Bob", "Seraphina"]  # newest activity first
        found = chars.list_characters(s, "FOREST")
        assert [(c.name, c.conversation_count) for c in found] == [("Seraphina", 1)]
        assert found[0].thumbnail.startswith(b"\xff\xd8")  # the JPEG thumbnail, not the PNG blob
        assert chars.list_characters(s, "sailor")[0].name == "Bob"
        assert ids["character"] == found[0].id


def test_images_add_remove_reorder_and_main_sheet(engine) -> None:
    ids = _populate(engine)
    cid = ids["character"]
    with session_scope(engine) as s:
        chars.add_images(s, cid, [_image("green")])
        names = lambda: [i.original_name for i in chars.get_images(s, cid)]  # noqa: E731
        assert names() == ["red.png", "blue.png", "green.png"]
        green = chars.get_images(s, cid)[2].id
        chars.set_main_image(s, cid, green)
        assert names() == ["green.png", "red.png", "blue.png"]
        chars.remove_image(s, green)
        assert names() == ["red.png", "blue.png"]
        assert [i.position for i in chars.get_images(s, cid)] == [0, 1]
        only = chars.create_character(s, [_image("black")], name="Solo")
        with pytest.raises(chars.StorageError, match="at least one reference sheet"):
            chars.remove_image(s, chars.get_images(s, only.id)[0].id)


def test_alternative_replies_keep_one_chosen(engine) -> None:
    ids = _populate(engine)
    cid = ids["conversation"]
    with session_scope(engine) as s:
        turn = s.get(Message, ids["m2"]).turn
        alt = convs.add_variant(s, cid, turn, "By the river.", status=MessageStatus.COMPLETE)
        assert convs.list_messages(s, cid)[-1].text == "By the river."
        assert convs.variant_counts(s, cid)[turn] == 2
        convs.choose_variant(s, cid, turn, 0)
        assert convs.list_messages(s, cid)[-1].text == "In my glade."
        assert alt.variant == 1
        convs.delete_after(s, cid, 0)
        assert [m.text for m in convs.list_messages(s, cid)] == ["Welcome, traveller."]


def test_deletes_cascade(engine) -> None:
    ids = _populate(engine)
    with session_scope(engine) as s:
        other = chars.duplicate_character(s, ids["character"])
        convs.create_conversation(s, other.id, "kept")
    with session_scope(engine) as s:
        convs.delete_conversation(s, ids["conversation"])
    with Session(engine) as s:
        assert s.exec(select(func.count(Message.id))).one() == 0
        assert s.exec(select(func.count(Attachment.id))).one() == 0
        assert s.get(Character, ids["character"]) is not None
    with session_scope(engine) as s:
        chars.delete_character(s, ids["character"])
    with Session(engine) as s:
        # Only the duplicate and its own images and conversation remain.
        assert [c.name for c in s.exec(select(Character)).all()] == ["Seraphina (copy)"]
        assert s.exec(select(func.count(SheetImage.id))).one() == 2
        assert [c.title for c in s.exec(select(Conversation)).all()] == ["kept"]


def test_a_failed_unit_of_work_stores_nothing(engine) -> None:
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        chars.create_character(s, [_image()], name="Half")
        raise RuntimeError("disk full")
    with Session(engine) as s:
        assert s.exec(select(func.count(Character.id))).one() == 0
        assert s.exec(select(func.count(SheetImage.id))).one() == 0


def test_sqlite_pragmas(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_migration_from_empty_database_to_head(db_url: str) -> None:
    engine = make_engine(db_url)
    assert current_revision(engine) is None
    migrate(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    from alembic.script import ScriptDirectory

    from storage.db import alembic_config

    assert current_revision(engine) == ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    migrate(engine)  # idempotent: a second start-up changes nothing


def test_the_tables_in_code_match_the_migrations(engine) -> None:
    """A column added to storage/tables.py without a migration would break every existing database."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def _populate_initial_schema(engine) -> None:
    """One of everything, written with the initial revision's columns (as a database made then holds)."""
    image = _image()
    now = "2026-11-01 10:00:00"
    rows = [
        ("INSERT INTO character (id, owner, name, notes, language, description, personality, scenario, first_mes, "
         "alternate_greetings, mes_example, system_prompt, post_history_instructions, creator_notes, tags, creator, "
         "character_version, extensions, character_book, created_at, updated_at) VALUES (7, 'local', 'Seraphina', "
         "'Guardian', '日本語', '', 'kind', '', 'Hi', '[\"Hello\"]', '', '', '', '', '[\"elf\"]', '', '', '{}', NULL, "
         ":now, :now)"),
        ("INSERT INTO sheetimage (id, character_id, position, original_name, mime_type, width, height, sha256, data, "
         "thumbnail, created_at) VALUES (3, 7, 0, 'red.png', 'image/png', 64, 48, :sha, :data, :thumb, :now)"),
        "INSERT INTO conversation (id, character_id, title, settings, created_at, updated_at) VALUES (5, 7, 'First', "
        "'{}', :now, :now)",
        ("INSERT INTO attachment (id, conversation_id, original_name, mime_type, width, height, sha256, data, "
         "thumbnail, created_at) VALUES (2, 5, 'green.png', 'image/png', 64, 48, :sha, :data, :thumb, :now)"),
        ("INSERT INTO message (id, conversation_id, turn, variant, chosen, role, text, attachment_ids, status, error, "
         "stats, created_at, updated_at) VALUES (9, 5, 0, 0, :yes, 'user', 'Where am I?', '[2]', 'complete', '', '{}', "
         ":now, :now)"),
    ]  # fmt: skip
    values = {"now": now, "sha": image.sha256, "data": image.data, "thumb": image.thumbnail, "yes": True}
    with engine.begin() as conn:
        for sql in rows:
            conn.execute(text(sql), {k: v for k, v in values.items() if f":{k}" in sql})


def test_upgrading_a_database_made_at_the_initial_revision_keeps_every_row(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine, "0001")
    _populate_initial_schema(engine)
    unchanged = OLD_TABLES - {"character", "conversation", "sheetimage", "attachment", "message"}  # none alters
    with engine.connect() as conn:
        before = {t: conn.execute(text(f"SELECT * FROM {t} ORDER BY id")).all() for t in unchanged}
    migrate(engine)  # to head, whatever later revisions exist
    with engine.connect() as conn:  # every row of them, column for column
        assert {t: conn.execute(text(f"SELECT * FROM {t} ORDER BY id")).all() for t in unchanged} == before
    with Session(engine) as s:
        character = s.get(Character, 7)
        assert (character.name, character.language, character.tags, character.owner_id) == (
            "Seraphina", "日本語", ["elf"], LOCAL_USER_ID,
        )  # fmt: skip
        assert not character.shared
        (conversation,) = convs.list_conversations(s)
        assert (conversation.id, conversation.title, conversation.owner_id) == (5, "First", LOCAL_USER_ID)
        assert [m.text for m in convs.list_messages(s, 5)] == ["Where am I?"]  # children survived the rebuild
        assert chars.sheets(s, 7)[0].data == _image().data  # every picture, byte for byte, in its new table
        (message,) = convs.list_messages(s, 5)
        assert convs.attachment_pictures(s, message)[0].data == _image().data
        assert chars.get_images(s, 7)[0].thumbnail == _image().thumbnail
    with session_scope(engine) as s:  # and new rows get ids after the migrated ones
        user = users.signed_in(s, "https://id.example", "alice", "alice@example.test", "Alice")
        assert user.id != LOCAL_USER_ID


def test_eight_threads_appending_at_once_lose_nothing(engine) -> None:
    with session_scope(engine) as s:
        c = chars.create_character(s, [_image()], name="Busy")
        shared_id = convs.create_conversation(s, c.id, "shared").id
        own_ids = [convs.create_conversation(s, c.id, f"own {i}").id for i in range(8)]
    errors: list[BaseException] = []
    per_thread = 15

    def worker(n: int) -> None:
        try:
            for i in range(per_thread):
                for conversation_id in (shared_id, own_ids[n]):
                    with session_scope(engine) as s:
                        convs.append_message(s, conversation_id, Role.USER, f"t{n}-{i}")
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as s:
        shared = convs.list_messages(s, shared_id)
        assert len(shared) == 8 * per_thread
        assert [m.turn for m in shared] == list(range(8 * per_thread))  # no duplicate or skipped turn
        assert {m.text for m in shared} == {f"t{n}-{i}" for n in range(8) for i in range(per_thread)}
        for n, own in enumerate(own_ids):
            assert [m.text for m in convs.list_messages(s, own)] == [f"t{n}-{i}" for i in range(per_thread)]
