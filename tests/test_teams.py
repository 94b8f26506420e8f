"""Teams: each person's characters and conversations are private; a shared character is seen, chatted
with and copied by the team but changed only by its owner; admins delete any character and read no
one's conversations. Enforced in `core.services.access` and checked here through every service function, on
SQLite and PostgreSQL."""

from __future__ import annotations

import inspect
import json

import pytest
from sqlalchemy import text
from sqlmodel import Session

from core.base.errors import NotFound, Refused
from core.base.sampling import SamplerSettings
from core.base.sheets import prepare_image
from core.model.backend import ReplyRequest, ReplyStream
from core.services import backup, characters, conversations, turns, users
from core.services.users import Identity, NotAllowed, Policy
from tests.conftest import person
from tests.conftest import sheet_image as _image

TABLES = ("app_user", "character", "sheetimage", "sheetimagebytes", "conversation", "message", "attachment",
          "attachmentbytes")  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'refsheet.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def team(engine):
    """Alice with a private character and a conversation with it; Bob; Carol, an admin."""
    alice, bob, carol = person(engine, "alice"), person(engine, "bob"), person(engine, "carol")
    secret = characters.create(
        engine, alice, {"name": "Secret", "first_mes": "Hi {{user}}."}, [_image(), _image("blue")]
    )
    chat = conversations.start(engine, alice, secret.id)
    turns.send(engine, alice, chat.id, "Only for me.", [_image("green")])
    return alice, bob, carol, secret.id, chat.id


def snapshot(engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT * FROM {t} ORDER BY 1")).all() for t in TABLES}


class NoBackend:
    """TEST DOUBLE: a loaded backend that must never be asked (the access check comes first)."""

    prepared = True

    def stream(self, request: ReplyRequest, stop=None, on_progress=None) -> ReplyStream:
        raise AssertionError("the backend was reached")

    def warm(self, tag: str, prefix) -> None:
        raise AssertionError("the backend was asked to read someone else's character")


def cross_user_calls(secret: int, chat: int, image: int) -> dict[str, tuple]:
    """Every service function that takes an id, with Alice's ids (the arguments after db and actor)."""
    s = SamplerSettings(temperature=0)
    return {
        "characters.get": (characters.get, secret),
        "characters.update": (characters.update, secret, {"name": "Mine now"}),
        "characters.duplicate": (characters.duplicate, secret),
        "characters.delete": (characters.delete, secret),
        "characters.share": (characters.share, secret, True),
        "characters.images": (characters.images, secret),
        "characters.main_sheet": (characters.main_sheet, secret),
        "characters.prompt_images": (characters.prompt_images, secret),
        "characters.add_images": (characters.add_images, secret, [_image("black")]),
        "characters.remove_image": (characters.remove_image, secret, image),
        "characters.set_main_image": (characters.set_main_image, secret, image),
        "characters.export_card": (characters.export_card, secret),
        "characters.export_charx": (characters.export_charx, secret),
        "characters.png_card_fits": (characters.png_card_fits, secret),
        "characters.warm_up": (lambda db, actor, c: characters.warm_up(db, actor, NoBackend(), c), secret),
        "conversations.for_character": (conversations.for_character, secret),
        "conversations.get": (conversations.get, chat),
        "conversations.start": (conversations.start, secret),
        "conversations.rename": (conversations.rename, chat, "Read by Bob"),
        "conversations.delete": (conversations.delete, chat),
        "conversations.save_sampler": (conversations.save_sampler, chat, s),
        "conversations.export_markdown": (conversations.export_markdown, chat),
        "conversations.export_jsonl": (conversations.export_jsonl, chat),
        "conversations.import_jsonl": (conversations.import_jsonl, secret, b'{"is_user":true,"mes":"Hi"}', "a.jsonl"),
        "conversations.set_hidden": (conversations.set_hidden, chat, 1, True),
        "conversations.speakers": (conversations.speakers, chat),
        "conversations.author_note": (conversations.author_note, chat),
        "turns.story": (turns.story, chat),
        "turns.message": (turns.message, chat, 1),
        "turns.request_for": (turns.request_for, chat),
        "turns.send": (turns.send, chat, "Hello Alice's character"),
        "turns.edit": (turns.edit, chat, 1, "Changed"),
        "turns.delete": (turns.delete, chat, 1),
        "turns.choose": (turns.choose, chat, 0, 0),
        "turns.seen_now": (turns.seen_now, chat),
        "turns.abandon": (turns.abandon, chat, 1),
        "turns.renew": (turns.renew, chat, 1),
        "turns.reply(into)": (lambda db, actor, c: turns.reply(db, actor, NoBackend(), c, into=1), chat),
        "turns.reply": (lambda db, actor, c: turns.reply(db, actor, NoBackend(), c), chat),
        "turns.reply(regenerate)": (
            lambda db, actor, c: turns.reply(db, actor, NoBackend(), c, regenerate_turn=0),
            chat,
        ),
        "turns.reply(continue)": (lambda db, actor, c: turns.reply(db, actor, NoBackend(), c, continue_turn=0), chat),
        "users.people": (users.people,),
        "users.local_library": (users.local_library,),
        "users.hand_over_local_library": (users.hand_over_local_library, 2),
    }


def test_nobody_reaches_anothers_private_data_through_any_service(engine, team) -> None:
    alice, bob, _carol, secret, chat = team
    image = characters.images(engine, alice, secret)[1].id
    calls = cross_user_calls(secret, chat, image)
    before = snapshot(engine)
    for name, (function, *args) in calls.items():
        with pytest.raises((NotFound, Refused)) as refused:
            function(engine, bob, *args)
        if name.startswith(("characters.", "conversations.", "turns.")):
            assert isinstance(refused.value, NotFound), name  # not his = not there: no hint that it exists
    assert snapshot(engine) == before  # and nothing changed
    # The lists leave it out.
    assert characters.summaries(engine, bob) == [] and characters.count(engine, bob) == 0
    assert characters.names(engine, bob) == {}
    assert conversations.recent(engine, bob) == []


def test_an_admin_opens_no_one_elses_private_character_or_conversation(engine, team) -> None:
    """Admins moderate: they list and delete any character, and open, chat with, export or copy none
    that is someone else's and private (the same "not found" as anyone else)."""
    alice, _bob, carol, secret, chat = team
    image = characters.images(engine, alice, secret)[1].id
    before = snapshot(engine)
    for name, (function, *args) in cross_user_calls(secret, chat, image).items():
        if name == "characters.delete" or name.startswith("users."):
            continue  # what admins may do
        with pytest.raises(NotFound):
            function(engine, carol, *args)
    assert snapshot(engine) == before
    assert secret in [s.id for s in characters.summaries(engine, carol)] and characters.count(engine, carol) == 1
    assert characters.names(engine, carol) == {}  # listed to delete, not a character to pick for a chat


def _shown(engine, actor) -> dict[str, set]:
    """Every list an actor gets, as the character and conversation ids (or uids) each one shows."""
    summaries = characters.summaries(engine, actor)
    recent = conversations.recent(engine, actor)
    files = backup_members(backup.backup(engine, actor))
    return {
        "characters.summaries": {s.id for s in summaries},
        "characters.count": set(range(characters.count(engine, actor))),
        "characters.names": set(characters.names(engine, actor)),
        "conversations.recent": {r.character_id for r in recent} | {f"chat:{r.id}" for r in recent},
        "backup.backup": {json.loads(line)["uid"] for line in files["characters.jsonl"].splitlines()}
        | {json.loads(line)["character_uid"] for line in files["conversations.jsonl"].splitlines()},
    }


LISTS = {"characters.summaries", "characters.count", "characters.names", "conversations.recent", "backup.backup"}


def test_every_list_follows_the_access_rule_after_un_sharing(engine, team) -> None:
    """Bob and Carol chat with Alice's shared character; she makes it private again. From then on no
    list shows it or those conversations to Bob, and only the admin's Library (to moderate) lists it."""
    alice, bob, carol, _secret, _chat = team
    lantern = characters.create(engine, alice, {"name": "Lantern", "first_mes": "Hi."}, [_image()])
    characters.share(engine, alice, lantern.id, True)
    chats = {who.id: conversations.start(engine, who, lantern.id).id for who in (bob, carol)}
    for who in (bob, carol):
        turns.send(engine, who, chats[who.id], f"Hello from {who.display_name}")
        assert lantern.id in _shown(engine, who)["conversations.recent"]  # shown while shared
    characters.share(engine, alice, lantern.id, False)

    for who in (bob, carol):
        shown = _shown(engine, who)
        assert set(shown) == LISTS
        for name, ids in shown.items():
            moderated = who.is_admin and name in ("characters.summaries", "characters.count")
            if not moderated:
                assert lantern.id not in ids and lantern.uid not in ids, (who.display_name, name)
                assert f"chat:{chats[who.id]}" not in ids, (who.display_name, name)
        assert [c.id for c in conversations.for_character(engine, alice, lantern.id)] == []
        with pytest.raises(NotFound):
            conversations.get(engine, who, chats[who.id])
    assert _shown(engine, bob)["characters.count"] == set()
    assert lantern.id in _shown(engine, carol)["characters.summaries"]


def backup_members(raw: bytes) -> dict[str, bytes]:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_every_service_function_is_in_the_cross_user_test() -> None:
    """A new service function that takes an actor must get a case above, or be a list: then `_shown`
    must show what it lists, or the un-share test fails (it checks `_shown` covers every list)."""
    own = {"characters.create", "users.sign_in", "users.current", "users.save_persona", "users.save_language",
           "users.sign_out_everywhere",
           "backup.restore", "backup.write_backup"}  # the actor's own rows  # fmt: skip
    listed = set(cross_user_calls(1, 1, 1)) | LISTS | own
    found = {
        f"{module.__name__.rsplit('.', 1)[-1]}.{name}"
        for module in (characters, conversations, turns, users, backup)
        for name, function in inspect.getmembers(module, inspect.isfunction)
        if function.__module__ == module.__name__
        and not name.startswith("_")  # helpers are reached through the public functions listed above
        and list(inspect.signature(function).parameters)[:2] == ["db", "actor"]
    }
    assert found - listed == set()


def test_a_shared_character_is_seen_chatted_with_and_copied_but_not_changed(engine, team) -> None:
    alice, bob, _carol, secret, alices_chat = team
    characters.share(engine, alice, secret, True)
    (seen,) = characters.summaries(engine, bob)
    assert (seen.id, seen.shared, seen.owner_name, seen.conversation_count) == (secret, True, "Alice", 0)
    bobs_chat = conversations.start(engine, bob, secret).id
    assert [b.text for b in turns.story(engine, bob, bobs_chat)] == ["Hi Bob."]  # {{user}} is the reader
    turns.send(engine, bob, bobs_chat, "Hello!")
    copy = characters.duplicate(engine, bob, secret, " (mine)")
    assert copy.owner_id == bob.id and not copy.shared
    characters.update(engine, bob, copy.id, {"notes": "My version"})
    for change in (lambda: characters.update(engine, bob, secret, {"name": "Taken"}),
                   lambda: characters.delete(engine, bob, secret), lambda: characters.share(engine, bob, secret, False),
                   lambda: characters.add_images(engine, bob, secret, [_image("black")])):  # fmt: skip
        with pytest.raises(Refused, match="only its owner can change it"):
            change()
    # Each keeps their own conversations: Alice never sees Bob's, Bob never sees Alice's.
    assert [c.id for c in conversations.for_character(engine, alice, secret)] == [alices_chat]
    assert [c.id for c in conversations.for_character(engine, bob, secret)] == [bobs_chat]
    with pytest.raises(NotFound):
        turns.story(engine, alice, bobs_chat)
    with pytest.raises(NotFound):
        turns.story(engine, bob, alices_chat)
    characters.share(engine, alice, secret, False)  # private again: gone from Bob's library
    assert [s.id for s in characters.summaries(engine, bob)] == [copy.id]


def test_an_admin_deletes_any_character_but_reads_no_conversation(engine, team) -> None:
    alice, _bob, carol, secret, chat = team
    assert carol.is_admin and secret in [s.id for s in characters.summaries(engine, carol)]
    for read in (lambda: turns.story(engine, carol, chat), lambda: conversations.get(engine, carol, chat)):
        with pytest.raises(NotFound):
            read()
    with pytest.raises(NotFound):  # not a character she sees: she may only delete it
        characters.update(engine, carol, secret, {"name": "Renamed by an admin"})
    characters.delete(engine, carol, secret)
    assert characters.summaries(engine, alice) == []


def test_sign_in_lets_in_only_the_team_and_remembers_people(engine) -> None:
    policy = Policy(frozenset({"ann@partner.test"}), frozenset({"example.test"}), frozenset({"boss@example.test"}))
    first = users.sign_in(engine, Identity("https://id", "ann", "Ann@Partner.test", "Ann", True), policy)
    again = users.sign_in(engine, Identity("https://id", "ann", "ann@partner.test", "Ann B.", True), policy)
    assert first.id == again.id and again.display_name == "Ann B." and not again.is_admin
    assert users.sign_in(engine, Identity("https://id", "b", "boss@example.test", "Boss", True), policy).is_admin
    with pytest.raises(NotAllowed) as outsider:
        users.sign_in(engine, Identity("https://id", "eve", "eve@elsewhere.test", "Eve", True), policy)
    assert "eve@elsewhere.test" in str(outsider.value) and "REFSHEET_ALLOWED_EMAILS" in str(outsider.value)
    with pytest.raises(NotAllowed, match="no verified email"):  # an allow-list trusts verified addresses only
        users.sign_in(engine, Identity("https://id", "mallory", "x@example.test", "M", False), policy)
    with pytest.raises(NotAllowed, match="no verified email"):  # an unverified address makes no admin either
        users.sign_in(engine, Identity("https://id", "m2", "boss@example.test", "M", False), policy)


def test_an_admin_hands_the_library_made_before_sign_in_to_a_person(engine, neutral_png) -> None:
    from core.services.users import LOCAL_USER

    made = characters.create(engine, LOCAL_USER, {"name": "From the laptop days"}, [prepare_image(neutral_png)])
    conversations.start(engine, LOCAL_USER, made.id)
    dana, admin = person(engine, "dana"), person(engine, "carol")
    assert characters.summaries(engine, dana) == []
    assert users.local_library(engine, admin) == (1, 1)
    assert [p.name for p in users.people(engine, admin)] == ["Carol", "Dana"]
    assert users.hand_over_local_library(engine, admin, dana.id) == (1, 1)
    assert [s.name for s in characters.summaries(engine, dana)] == ["From the laptop days"]
    assert len(conversations.recent(engine, dana)) == 1 and users.local_library(engine, admin) == (0, 0)
    with Session(engine) as s:
        assert s.exec(text("SELECT count(*) FROM character")).one()[0] == 1


def test_a_deleted_rows_id_is_never_given_again(engine) -> None:
    """An old deep link (`/chat?character=2`) must not open a newer character, someone else's shared one
    perhaps: SQLite tables are AUTOINCREMENT (migration 0005); PostgreSQL's sequences never go back."""
    alice, bob = person(engine, "alice"), person(engine, "bob")
    old = characters.create(engine, alice, {"name": "Old"}, [_image()])
    chat = conversations.start(engine, alice, old.id)
    turns.send(engine, alice, chat.id, "Hello", [_image("green")])
    (message,) = turns.story(engine, alice, chat.id)
    characters.delete(engine, alice, old.id)
    new = characters.create(engine, bob, {"name": "Bob's shared"}, [_image()])
    characters.share(engine, bob, new.id, True)
    new_chat = conversations.start(engine, bob, new.id)
    turns.send(engine, bob, new_chat.id, "Hi", [_image("green")])
    (new_message,) = turns.story(engine, bob, new_chat.id)
    assert new.id > old.id and new_chat.id > chat.id and new_message.id > message.id
    with pytest.raises(NotFound):
        characters.get(engine, alice, old.id)  # the old link finds nothing, not Bob's character


def test_migration_0005_keeps_every_row_and_id(db_url: str) -> None:
    from storage.db import make_engine, migrate

    engine = make_engine(db_url)
    insert = ("INSERT INTO character (uid, owner_id, shared, name, notes, language, description, personality, "
              "scenario, first_mes, alternate_greetings, mes_example, system_prompt, post_history_instructions, "
              "creator_notes, tags, creator, character_version, extensions, character_book, created_at, updated_at) "
              "VALUES (:uid, 1, :no, :name, '', 'English', '', '', '', '', '[]', '', '', '', '', '[]', '', '', '{}', "
              "NULL, :now, :now)")  # fmt: skip
    try:
        migrate(engine, "0004")
        with engine.begin() as conn:
            for i in range(4):
                conn.execute(text(insert), {"uid": f"{i:032x}", "no": False, "name": f"C{i}", "now": "2026-11-01"})
            conn.execute(text("DELETE FROM character WHERE name = 'C1'"))
        before = snapshot(engine)
        migrate(engine)
        after = snapshot(engine)
        assert after["character"] == before["character"]  # every row, with its id
        with engine.connect() as conn:
            iats = conn.execute(text("SELECT latest_iat, signed_out_iat FROM app_user")).all()
        assert [tuple(row) for row in iats] == [(None, None)]  # for the local user: nothing yet
        from core.services.users import LOCAL_USER

        characters.delete(engine, LOCAL_USER, 4)
        assert characters.create(engine, LOCAL_USER, {"name": "After"}, [_image()]).id == 5  # not 4, not 2
    finally:
        engine.dispose()


def test_an_admins_search_reads_no_private_notes(engine, team) -> None:
    """An admin lists every character to delete what must go; searching must not become a way to read
    someone's private notes a letter at a time. Search is plain text: `%` and `_` are themselves."""
    alice, _bob, carol, secret, _chat = team
    characters.update(engine, alice, secret, {"notes": "second line: password hunter2"})
    assert characters.count(engine, alice, "hunter2") == 1  # her own notes: found
    assert characters.count(engine, carol, "hunter2") == 0  # not through an admin's search…
    assert characters.count(engine, carol, "Secret") == 1  # …which finds names
    assert characters.summaries(engine, carol, "%") == [] and characters.count(engine, carol, "_") == 0


def test_one_line_fields_stay_on_one_line(engine) -> None:
    alice = person(engine, "alice")
    made = characters.create(engine, alice, {"name": "Bob\n\n---\n# Notice", "tags": ["a\nb"], "creator": "x\r\ny"},
                             [_image()])  # fmt: skip
    assert (made.name, made.tags, made.creator) == ("Bob --- # Notice", ["a b"], "x y")
    chat = conversations.start(engine, alice, made.id)
    conversations.rename(engine, alice, chat.id, "Title\n# Heading")
    assert conversations.get(engine, alice, chat.id).title == "Title # Heading"
