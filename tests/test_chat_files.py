"""Chats out and in: Markdown and SillyTavern JSONL exports, and SillyTavern chats imported with their
swipes kept, on a real SQLite file. The SillyTavern file in tests/data was written by hand from what
SillyTavern writes (`public/script.js` `saveChat`, `getFirstMessage`, swipe_info entries; send_date in
its three forms) and what its reader takes (`public/scripts/utils.js` `parseTimestamp`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from core.base.errors import NotFound
from core.base.sheets import prepare_image
from core.formats import chat_files
from core.formats.chat_files import ChatFileError, parse_send_date
from core.model.prompts import fill_placeholders
from core.services import characters, conversations, turns
from core.services.users import LOCAL_USER, Actor
from storage import conversations as convs
from storage.db import session_scope
from storage.tables import Character, Conversation, Message, MessageStatus, Role
from tests.conftest import new_app, person
from tests.conftest import sheet_image as _image

ST_CHAT = Path(__file__).parent / "data" / "sillytavern_chat.jsonl"
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _count(engine, table) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count(table.id))).one()


def _rows(engine, conversation_id: int, user: str = LOCAL_USER.user_name) -> list[tuple]:
    """What a conversation holds, as it reads ({{char}} and {{user}} filled, as when shown and
    exported; stored, they stay macros), with times to the second (what the file format keeps)."""
    with Session(engine) as s:
        name = s.get(Character, s.get(Conversation, conversation_id).character_id).name
        return [(m.turn, m.variant, m.chosen, m.role, fill_placeholders(m.text, name, user),
                 m.created_at.replace(microsecond=0, tzinfo=None))
                for m in convs.all_messages(s, conversation_id)]  # fmt: skip


def _character(engine, actor: Actor = LOCAL_USER, **profile) -> int:
    profile = {
        "name": "Seraphina",
        "first_mes": "Rest, {{user}}.",
        "alternate_greetings": ["Awake, {{user}}?"],
    } | profile
    return characters.create(engine, actor, profile, [_image()]).id


def _long_chat(engine, actor: Actor = LOCAL_USER) -> tuple[int, int]:
    """A greeting with an alternate, a user message with a picture, a reply with three alternatives
    (the middle one chosen), and a last user message."""
    character = _character(engine, actor)
    chat = conversations.start(engine, actor, character, title="In the glade")
    turns.send(engine, actor, chat.id, "Where am I?\n\nWho *are* you?", [_image("green")])
    with session_scope(engine) as s:
        reply = convs.append_message(s, chat.id, Role.ASSISTANT, "In my forest.")
        written = convs.add_variant(s, chat.id, reply.turn, "The forest keeps you now.", MessageStatus.COMPLETE)
        convs.update_message(s, written.id, stats={"new_tokens": 6})  # as a reply the model wrote
        convs.add_variant(s, chat.id, reply.turn, "I am its guardian. 守护者。", MessageStatus.COMPLETE)
        convs.choose_variant(s, chat.id, reply.turn, 1)
    turns.send(engine, actor, chat.id, "Thank you.")
    return character, chat.id


# -- JSONL --------------------------------------------------------------------------------------------
def test_a_chat_we_write_reads_back_equal(engine) -> None:
    character, chat = _long_chat(engine)
    raw = conversations.export_jsonl(engine, LOCAL_USER, chat)
    header, *lines = [json.loads(line) for line in raw.decode().split("\n")]
    assert list(header) == ["user_name", "character_name", "create_date", "chat_metadata"]
    assert header["character_name"] == "Seraphina" and header["user_name"] == LOCAL_USER.user_name
    assert [m["is_user"] for m in lines] == [False, True, False, True]
    assert {"name", "is_user", "is_system", "send_date", "mes", "extra"} <= set(lines[1])
    greeting, asked, reply = lines[0], lines[1], lines[2]
    assert greeting["swipes"] == ["Rest, you.", "Awake, you?"] and greeting["swipe_id"] == 0
    assert reply["swipe_id"] == 1 and reply["mes"] == reply["swipes"][1] == "The forest keeps you now."
    assert [sorted(info) for info in reply["swipe_info"]] == [
        ["extra", "send_date"],
        ["extra", "gen_finished", "gen_started", "send_date"],  # the one the model wrote says how long it took
        ["extra", "send_date"],
    ]
    assert "gen_started" in reply and "gen_started" not in greeting
    assert "swipes" not in asked and asked["extra"] == {"refsheet_images": 1}  # the picture is noted
    # SillyTavern's reader takes our send_date (its humanized form, read as UTC).
    assert parse_send_date(asked["send_date"], NOW).year == datetime.now(UTC).year

    imported = conversations.import_jsonl(engine, LOCAL_USER, character, raw, "export.jsonl")
    assert imported.messages == 4 and imported.skipped_system == 0
    assert imported.conversation.title == "In the glade" and imported.conversation.owner_id == LOCAL_USER.id
    assert _rows(engine, imported.conversation.id) == _rows(engine, chat)
    # And the file read again is the same chat (names, texts, alternatives, chosen, times to the second).
    again = conversations.export_jsonl(engine, LOCAL_USER, imported.conversation.id)
    first, second = chat_files.read_jsonl(raw, "a"), chat_files.read_jsonl(again, "b")
    assert (first.user_name, first.character_name, first.title) == (second.user_name, second.character_name,
                                                                     second.title)  # fmt: skip
    assert [(m.is_user, m.chosen, m.name, [a.text for a in m.alternatives]) for m in first.messages] == [
        (m.is_user, m.chosen, m.name, [a.text for a in m.alternatives]) for m in second.messages
    ]
    assert [a.at.replace(microsecond=0) for m in first.messages for a in m.alternatives] == [
        a.at.replace(microsecond=0) for m in second.messages for a in m.alternatives
    ]


def test_a_real_sillytavern_chat_imports_with_its_swipes(engine) -> None:
    character = _character(engine, first_mes="", alternate_greetings=[])
    imported = conversations.import_jsonl(engine, LOCAL_USER, character, ST_CHAT.read_bytes(), "Seraphina.jsonl")
    assert imported.messages == 4 and imported.skipped_system == 1  # the system note is left out, and said
    assert imported.conversation.title == "Seraphina"
    assert imported.conversation.created_at.replace(tzinfo=None) == datetime(2024, 5, 12, 14, 30, 12)
    t = datetime
    assert _rows(engine, imported.conversation.id) == [
        (0, 0, True, "assistant", "*You wake in a glade.* Rest, you. I am Seraphina.", t(2024, 5, 12, 14, 30)),
        (0, 1, False, "assistant", "*Birdsong.* Awake at last, you?", t(2024, 5, 12, 14, 30)),
        (1, 0, True, "user", "Where am I? Who are you?", t(2024, 5, 12, 14, 31, 7)),
        (2, 0, False, "assistant", "The forest keeps you now.", t(2024, 5, 12, 14, 31)),
        # `mes` is what SillyTavern shows, even where its swipe kept the text from before an edit.
        (2, 1, True, "assistant", "In my forest, traveller. You are safe here.", t(2024, 5, 12, 14, 32, 5)),
        (2, 2, False, "assistant", "I am the guardian of this glade.", t(2024, 5, 12, 14, 33, 20)),  # epoch ms
        (3, 0, True, "user", "Thank you, Seraphina.", t(2024, 5, 12, 14, 35)),  # ISO 8601
    ]
    story = turns.story(engine, LOCAL_USER, imported.conversation.id)
    assert [(b.turn, b.variant, b.variants) for b in story] == [(0, 0, 2), (1, 0, 1), (2, 1, 3), (3, 0, 1)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-5-12 @14h 30m 12s 345ms", datetime(2024, 5, 12, 14, 30, 12, 345000, tzinfo=UTC)),
        ("2024-05-12@14h30m12s", datetime(2024, 5, 12, 14, 30, 12, tzinfo=UTC)),
        ("May 12, 2024 2:30pm", datetime(2024, 5, 12, 14, 30, tzinfo=UTC)),
        ("June 19, 2023 12:05am", datetime(2023, 6, 19, 0, 5, tzinfo=UTC)),
        (1715524212345, datetime(2024, 5, 12, 14, 30, 12, 345000, tzinfo=UTC)),
        ("1715524212345", datetime(2024, 5, 12, 14, 30, 12, 345000, tzinfo=UTC)),
        ("2024-05-12T16:30:12+02:00", datetime(2024, 5, 12, 14, 30, 12, tzinfo=UTC)),
        ("2024-05-12T14:30:12.345Z", datetime(2024, 5, 12, 14, 30, 12, 345000, tzinfo=UTC)),
        ("yesterday", NOW),
        (None, NOW),
        ("9" * 400, NOW),
    ],
)
def test_send_date_in_every_form_sillytavern_wrote(value, expected) -> None:
    assert parse_send_date(value, NOW) == expected


# -- Markdown -----------------------------------------------------------------------------------------
def test_markdown_has_every_chosen_message_and_name_in_order(engine) -> None:
    _, chat = _long_chat(engine)
    text = conversations.export_markdown(engine, LOCAL_USER, chat)
    assert text.startswith("# In the glade\n") and "between you and Seraphina" in text
    chosen = ["Rest, you.", "Where am I?\n\nWho *are* you?", "The forest keeps you now.", "Thank you."]
    positions = [text.index(m) for m in chosen]
    assert positions == sorted(positions)
    speakers = [line.split(" · ")[0] for line in text.splitlines() if line.startswith("### ")]
    assert speakers == ["### Seraphina", "### you", "### Seraphina", "### you"]
    assert "[image]" in text and "2 other alternatives" in text and "Alternative 3 of 3" in text
    assert text.index("The forest keeps you now.") < text.index("In my forest.")  # the others under it
    assert "另有 2 个备选回复" in conversations.export_markdown(engine, LOCAL_USER, chat, "zh")


# -- refused files --------------------------------------------------------------------------------------
GOOD = ST_CHAT.read_bytes()


@pytest.mark.parametrize(
    ("raw", "code", "line"),
    [
        (b"\x89PNG\r\n\x1a\n\xff\xfe", "not_text", None),
        (GOOD + b"\n{not json", "not_json", 8),
        (b'{"user_name": "A"}\n["a list"]', "not_object", 2),
        (b'{"spec": "chara_card_v2", "data": {}}', "not_chat", None),
        (b'[{"mes": "hi"}]', "not_object", 1),
        (b'{"user_name": "A", "character_name": "B"}\n{"name": "B", "is_user": false}', "not_message", 2),
        (b'{"user_name": "A", "character_name": "B"}\n', "empty", None),
        (b"", "not_chat", None),
    ],
)
def test_bad_files_are_refused_naming_file_and_line_and_nothing_is_stored(engine, raw, code, line) -> None:
    character = _character(engine)
    before = (_count(engine, Conversation), _count(engine, Message))
    with pytest.raises(ChatFileError) as refused:
        conversations.import_jsonl(engine, LOCAL_USER, character, raw, "broken.jsonl")
    assert refused.value.code == code and "broken.jsonl" in str(refused.value)
    if line is not None:
        assert f"line {line}" in str(refused.value) and f"第 {line} 行" in refused.value.message("zh")
    assert (_count(engine, Conversation), _count(engine, Message)) == before


def test_limits_refuse_huge_files(engine, monkeypatch) -> None:
    character = _character(engine)
    monkeypatch.setattr(chat_files, "MAX_CHAT_BYTES", 1000)
    with pytest.raises(ChatFileError, match="at most 0 MB") as refused:
        conversations.import_jsonl(engine, LOCAL_USER, character, GOOD, "huge.jsonl")
    assert refused.value.code == "too_large"
    monkeypatch.setattr(chat_files, "MAX_CHAT_BYTES", 2**20)
    monkeypatch.setattr(chat_files, "MAX_MESSAGES", 3)
    with pytest.raises(ChatFileError, match="more than 3 messages"):
        conversations.import_jsonl(engine, LOCAL_USER, character, GOOD, "long.jsonl")
    assert _count(engine, Conversation) == 0


def test_a_failure_while_storing_leaves_nothing(engine, monkeypatch) -> None:
    character = _character(engine)

    def broken(session, conversation, messages):
        session.add(conversation)
        session.flush()
        raise RuntimeError("disk gone mid-way")

    monkeypatch.setattr(convs, "insert_conversation", broken)
    with pytest.raises(RuntimeError):
        conversations.import_jsonl(engine, LOCAL_USER, character, GOOD, "chat.jsonl")
    assert _count(engine, Conversation) == 0 and _count(engine, Message) == 0


def test_text_is_cleaned_of_nul_and_lone_surrogates(engine) -> None:
    character = _character(engine)
    raw = b'{"user_name": "A", "character_name": "B"}\n{"is_user": true, "mes": "a\\u0000b\\ud800c"}'
    imported = conversations.import_jsonl(engine, LOCAL_USER, character, raw, "odd.jsonl")
    assert [r[4] for r in _rows(engine, imported.conversation.id)] == ["ab\ufffdc"]


# -- whose it is ----------------------------------------------------------------------------------------
def test_nobody_exports_or_imports_into_someone_elses_private_chat(engine) -> None:
    alice, bob, carol = person(engine, "alice"), person(engine, "bob"), person(engine, "carol")
    secret, chat = _long_chat(engine, alice)
    before = (_count(engine, Conversation), _count(engine, Message))
    for intruder in (bob, carol):  # an admin reads no one's conversations either
        with pytest.raises(NotFound):
            conversations.export_jsonl(engine, intruder, chat)
        with pytest.raises(NotFound):
            conversations.export_markdown(engine, intruder, chat)
    with pytest.raises(NotFound):
        conversations.import_jsonl(engine, bob, secret, GOOD, "mine.jsonl")
    assert (_count(engine, Conversation), _count(engine, Message)) == before
    # Shared, the character takes Bob's imported chat, and the chat is his alone.
    characters.share(engine, alice, secret, True)
    mine = conversations.import_jsonl(engine, bob, secret, GOOD, "mine.jsonl").conversation
    assert mine.owner_id == bob.id
    with pytest.raises(NotFound):
        conversations.export_jsonl(engine, alice, mine.id)
    assert "Thank you, Seraphina." in conversations.export_markdown(engine, bob, mine.id)


# -- the Chat page ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_chat_page_offers_downloads_and_imports_a_chat(app_env, app_db, neutral_png) -> None:
    character = characters.create(app_db, LOCAL_USER, {"name": "Seraphina", "first_mes": "Hello."},
                                  [prepare_image(neutral_png, "sheet.png")]).id  # fmt: skip
    at = new_app("pages/chat.py", character=character)
    assert not at.exception
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Download as Markdown", "Download for SillyTavern (JSONL)"]
    at.file_uploader(key=f"chat_import_{character}_0").set_value(("Seraphina.jsonl", GOOD, "application/jsonl")).run()
    assert not at.exception
    with Session(app_db) as s:
        new = s.exec(select(Conversation).where(Conversation.title == "Seraphina")).one()
    assert at.query_params["conversation"] == str(new.id)  # the imported chat is open
    assert [m.markdown[0].value for m in at.chat_message][-1] == "Thank you, Seraphina."
    assert any("Imported “Seraphina”: 4 messages." in t.value for t in at.toast)
