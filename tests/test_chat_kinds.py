"""Hidden messages, narrator lines, group speakers and what a SillyTavern chat carries: kept on
import, placed in the prompt as SillyTavern places them, and written back so the file comes out as
it went in; on SQLite and PostgreSQL, with the migration that added them keeping every row.

The chats below are written as SillyTavern writes them: `saveChat` (a header, then the lines),
`saveGroupChat` (the lines alone, the first marked `is_group`), `getFirstMessage` (a greeting's swipes
and an empty `swipe_info`), `sendNarratorMessage` (`/sys`: "System", `extra.type: "narrator"`),
`hideChatMessageRange` (`/hide`: `is_system: true` on the line), `sendCommentMessage` (`/comment`: a
note for the person, not part of the story), and replies with their `extra` (api, model, reasoning,
token count) and generation times, per swipe in `swipe_info`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import inspect, text
from sqlmodel import Session

from core.base.errors import NotFound
from core.services import characters, conversations, turns
from core.services.users import LOCAL_USER
from storage.tables import Conversation, Role, as_utc
from tests.conftest import ROOT, new_app, person
from tests.conftest import sheet_image as _image

REPLY_EXTRA = {"api": "openai", "model": "gpt-4o-2024-08-06", "reasoning": "She should reassure him.",
               "reasoning_duration": 1200, "token_count": 31}  # fmt: skip
NARRATOR_EXTRA = {"type": "narrator", "bias": None, "gen_id": 1740938760123, "isSmallSys": False, "api": "manual",
                  "model": "slash command"}  # fmt: skip
USER = {"is_user": True, "is_system": False, "extra": {"isSmallSys": False}, "force_avatar": "User Avatars/user.png"}
HEADER = {"user_name": "Rowan", "character_name": "Seraphina", "create_date": "2025-03-02@18h04m11s",
          "chat_metadata": {"note_prompt": "Seraphina speaks softly.", "note_interval": 1, "note_position": 1,
                            "note_depth": 4, "note_role": 0, "tainted": True, "timedWorldInfo": {"sticky": {},
                            "cooldown": {}}, "lastInContextMessageId": 6, "integrity": "0b5c3f2e"}}  # fmt: skip
ONE_ON_ONE = [
    {"name": "Seraphina", "is_user": False, "is_system": False, "send_date": "March 2, 2025 6:04pm",
     "mes": "*You wake in a glade.* Rest, Rowan.", "extra": {}, "swipe_id": 0,
     "swipes": ["*You wake in a glade.* Rest, Rowan.", "*Birdsong.* Awake at last?"], "swipe_info": []},
    {"name": "Rowan", "send_date": "March 2, 2025 6:05pm", "mes": "Where am I?", **USER},
    {"extra": REPLY_EXTRA, "name": "Seraphina", "is_user": False, "send_date": "March 2, 2025 6:05pm",
     "mes": "In my forest. You are safe.", "is_system": False, "title": "", "gen_started": "2025-03-02T18:05:20.101Z",
     "gen_finished": "2025-03-02T18:05:24.877Z", "swipe_id": 1,
     "swipes": ["The forest keeps you now.", "In my forest. You are safe."],
     "swipe_info": [{"send_date": "March 2, 2025 6:05pm", "gen_started": "2025-03-02T18:05:10.000Z",
                     "gen_finished": "2025-03-02T18:05:14.500Z",
                     "extra": {"api": "openai", "model": "gpt-4o-2024-08-06", "token_count": 25}},
                    {"send_date": "March 2, 2025 6:05pm", "gen_started": "2025-03-02T18:05:20.101Z",
                     "gen_finished": "2025-03-02T18:05:24.877Z", "extra": REPLY_EXTRA}]},
    {"name": "System", "is_user": False, "is_system": False, "send_date": "March 2, 2025 6:06pm",
     "mes": "A storm rolls in from the north.", "force_avatar": "img/five.png", "extra": NARRATOR_EXTRA},
    {"name": "Rowan", "send_date": "March 2, 2025 6:06pm", "mes": "(OOC: make it scarier)", **USER,
     "is_system": True},  # hidden with /hide
    {"name": "Note", "is_user": False, "is_system": True, "send_date": "March 2, 2025 6:07pm",
     "mes": "Remember the lantern.", "force_avatar": "img/quill.png",
     "extra": {"type": "comment", "gen_id": 1740938820000, "isSmallSys": False, "api": "manual",
               "model": "slash command"}},  # /comment: a note, not part of the story
    {"extra": {"api": "openai", "model": "gpt-4o-2024-08-06", "token_count": 12}, "name": "Seraphina",
     "is_user": False, "send_date": 1740938850000, "mes": "*Thunder.* Stay close.", "is_system": True,
     "gen_started": "2025-03-02T18:07:25.000Z", "gen_finished": "2025-03-02T18:07:30.000Z", "swipe_id": 0,
     "swipes": ["*Thunder.* Stay close."], "swipe_info": [{"send_date": 1740938850000,
     "gen_started": "2025-03-02T18:07:25.000Z", "gen_finished": "2025-03-02T18:07:30.000Z",
     "extra": {"api": "openai", "model": "gpt-4o-2024-08-06", "token_count": 12}}]},
    {"name": "Rowan", "send_date": "2025-3-2 @18h 08m 01s 250ms", "mes": "Thank you.", **USER},
]  # fmt: skip


def group_line(name: str, mes: str, when: str, **more) -> dict:
    """A group member's line (`saveGroupChat`: each names its speaker and avatar)."""
    return {"is_user": False, "is_system": False, "name": name, "send_date": when, "original_avatar": f"{name}.png",
            "extra": {"gen_id": 1740992400000}, "mes": mes, "force_avatar": f"/thumbnail?type=avatar&file={name}.png",
            **more}  # fmt: skip


GROUP = [
    group_line("Seraphina", "Welcome to the glade.", "March 3, 2025 9:00am", is_group=True),
    group_line("Eldric", "Another lost one? Sit by the fire.", "March 3, 2025 9:00am"),
    {"name": "Rowan", "send_date": "March 3, 2025 9:01am", "mes": "Hello, both of you.", **USER},
    group_line("Eldric", "Hello yourself. Hungry?", "March 3, 2025 9:01am", extra=REPLY_EXTRA,
               gen_started="2025-03-03T09:01:10.000Z", gen_finished="2025-03-03T09:01:14.000Z", swipe_id=0,
               swipes=["Hello yourself. Hungry?"], swipe_info=[{"send_date": "March 3, 2025 9:01am",
               "gen_started": "2025-03-03T09:01:10.000Z", "gen_finished": "2025-03-03T09:01:14.000Z",
               "extra": REPLY_EXTRA}]),
    group_line("Seraphina", "Let him rest, Eldric.", "March 3, 2025 9:02am"),
    {"name": "System", "is_user": False, "is_system": False, "send_date": "March 3, 2025 9:03am",
     "mes": "The fire crackles.", "force_avatar": "img/five.png", "extra": NARRATOR_EXTRA},
    group_line("Eldric", "(whispers) He looks like trouble.", "March 3, 2025 9:03am", is_system=True),
]  # fmt: skip


def jsonl(*lines: dict) -> bytes:
    return "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()


def story_lines(engine, chat: int) -> list[dict]:
    return [json.loads(line) for line in conversations.export_jsonl(engine, LOCAL_USER, chat).decode().split("\n")]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'refsheet.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def seraphina(engine) -> int:
    return characters.create(engine, LOCAL_USER, {"name": "Seraphina"}, [_image()]).id


# -- round trips -------------------------------------------------------------------------------------------
def test_a_sillytavern_chat_comes_back_line_for_line(engine, seraphina) -> None:
    imported = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(HEADER, *ONE_ON_ONE), "glade.jsonl")
    assert (imported.messages, imported.skipped_system, imported.hidden, imported.narrator) == (7, 1, 2, 1)
    assert imported.speakers == ()
    header, *lines = story_lines(engine, imported.conversation.id)
    story = [line for line in ONE_ON_ONE if line["name"] != "Note"]  # the comment is a note, left out
    assert lines == story  # is_system, names, extra, send_date, swipes, swipe_info, generation times: all of it
    assert header["chat_metadata"] == {**HEADER["chat_metadata"], "refsheet": {"title": "glade"}}
    assert header["create_date"] == HEADER["create_date"]


def test_a_group_chat_comes_back_line_for_line_and_says_who_else_speaks(engine, seraphina) -> None:
    imported = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(*GROUP), "group.jsonl")
    assert imported.speakers == ("Eldric",) and (imported.hidden, imported.narrator) == (1, 1)
    assert conversations.speakers(engine, LOCAL_USER, imported.conversation.id) == ["Eldric"]
    header, *lines = story_lines(engine, imported.conversation.id)
    assert lines == GROUP and header["character_name"] == "Seraphina"  # now a chat with one character
    bubbles = turns.story(engine, LOCAL_USER, imported.conversation.id)
    # Her own lines, decided on import, have no speaker: they are hers whatever she is called later.
    assert [(b.speaker, b.is_user, b.is_narrator, b.hidden) for b in bubbles] == [
        ("", False, False, False), ("Eldric", False, False, False), ("Rowan", True, False, False),
        ("Eldric", False, False, False), ("", False, False, False), ("System", False, True, False),
        ("Eldric", False, False, True),
    ]  # fmt: skip


# -- what the model reads --------------------------------------------------------------------------------------
def test_hidden_lines_stay_out_of_the_prompt_and_narration_is_placed_as_sillytavern_does(engine, seraphina) -> None:
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(HEADER, *ONE_ON_ONE), "g.jsonl").conversation
    history = [(t.role, t.text) for t in turns.request_for(engine, LOCAL_USER, chat.id).history]
    assert history == [
        ("assistant", "*You wake in a glade.* Rest, Rowan."),
        ("user", "Where am I?"),
        ("assistant", "In my forest. You are safe."),
        ("user", "(Narration: A storm rolls in from the north.)"),  # in place, no speaker's name
        ("user", "Thank you."),  # the hidden message and the hidden reply are not there
    ]


def test_in_a_group_the_others_speak_as_themselves(engine, seraphina) -> None:
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(*GROUP), "group.jsonl").conversation
    history = [(t.role, t.text) for t in turns.request_for(engine, LOCAL_USER, chat.id).history]
    assert history == [
        ("assistant", "Welcome to the glade."),
        ("user", "Eldric: Another lost one? Sit by the fire."),
        ("user", "Hello, both of you."),
        ("user", "Eldric: Hello yourself. Hungry?"),
        ("assistant", "Let him rest, Eldric."),
        ("user", "(Narration: The fire crackles.)"),
    ]


def test_hiding_a_message_is_saved_left_out_of_the_prompt_and_exported(engine, seraphina) -> None:
    chat = conversations.start(engine, LOCAL_USER, seraphina)
    turns.send(engine, LOCAL_USER, chat.id, "Remember: I am a knight.")
    turns.send(engine, LOCAL_USER, chat.id, "Where am I?")
    conversations.set_hidden(engine, LOCAL_USER, chat.id, 0, True)
    assert [b.hidden for b in turns.story(engine, LOCAL_USER, chat.id)] == [True, False]  # kept, shown dimmed
    assert [t.text for t in turns.request_for(engine, LOCAL_USER, chat.id).history] == ["Where am I?"]
    assert [line["is_system"] for line in story_lines(engine, chat.id)[1:]] == [True, False]
    conversations.set_hidden(engine, LOCAL_USER, chat.id, 0, False)
    assert len(turns.request_for(engine, LOCAL_USER, chat.id).history) == 2
    with pytest.raises(NotFound):
        conversations.set_hidden(engine, LOCAL_USER, chat.id, 9, True)
    alice = person(engine, "alice")  # not hers: not there
    with pytest.raises(NotFound):
        conversations.set_hidden(engine, alice, chat.id, 0, True)


def test_the_author_s_note_is_kept_to_show(engine, seraphina) -> None:
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(HEADER, *ONE_ON_ONE), "g.jsonl").conversation
    note = conversations.author_note(engine, LOCAL_USER, chat.id)
    assert (note.text, note.depth, note.interval) == ("Seraphina speaks softly.", 4, 1)
    assert conversations.author_note(engine, LOCAL_USER, conversations.start(engine, LOCAL_USER, seraphina).id) is None


def test_markdown_names_the_narrator_and_marks_hidden_messages(engine, seraphina) -> None:
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(HEADER, *ONE_ON_ONE), "g.jsonl").conversation
    headings = [line for line in conversations.export_markdown(engine, LOCAL_USER, chat.id).splitlines()
                if line.startswith("### ")]  # fmt: skip
    assert headings[3].startswith("### System · ") and headings[4].endswith(" · *hidden from the character*")
    assert "对角色隐藏" in conversations.export_markdown(engine, LOCAL_USER, chat.id, "zh")


# -- the migration ---------------------------------------------------------------------------------------------
def test_migration_0007_keeps_every_conversation_and_message(db_url: str) -> None:
    from storage.db import make_engine, migrate

    engine = make_engine(db_url)
    rows = [
        ("INSERT INTO character (uid, owner_id, shared, name, notes, language, description, personality, scenario, "
         "first_mes, alternate_greetings, mes_example, system_prompt, post_history_instructions, creator_notes, tags, "
         "creator, character_version, extensions, character_book, created_at, updated_at) VALUES ('c1', 1, :no, "
         "'Seraphina', '', 'English', '', '', '', '', '[]', '', '', '', '', '[]', '', '', '{}', NULL, :now, :now)"),
        "INSERT INTO conversation (uid, character_id, owner_id, title, settings, created_at, updated_at) VALUES "
        "('v1', 1, 1, 'First', '{\"temperature\": 0.5}', :now, :now)",
        ("INSERT INTO message (conversation_id, turn, variant, chosen, role, text, attachment_ids, status, error, "
         "stats, created_at, updated_at) VALUES (1, 0, 0, :yes, 'assistant', 'Hello.', '[]', 'complete', '', "
         "'{\"new_tokens\": 2}', :now, :now), (1, 1, 0, :yes, 'user', 'Hi!', '[]', 'complete', '', '{}', :now, :now)"),
    ]  # fmt: skip
    old = ("SELECT id, conversation_id, turn, variant, chosen, role, text, attachment_ids, status, error, stats, "
           "created_at, updated_at FROM message ORDER BY id")  # fmt: skip
    try:
        migrate(engine, "0006")
        with engine.begin() as conn:
            for sql in rows:
                conn.execute(text(sql), {"no": False, "yes": True, "now": "2026-11-01 10:00:00"})
        with engine.connect() as conn:
            before = conn.execute(text(old)).all(), conn.execute(text("SELECT * FROM conversation")).all()
        migrate(engine)
        with engine.connect() as conn:
            after = conn.execute(text(old)).all(), conn.execute(text("SELECT * FROM conversation")).all()
            added = conn.execute(text("SELECT hidden, speaker, carried FROM message ORDER BY id")).all()
            if engine.dialect.name == "sqlite":  # still AUTOINCREMENT (migration 0005): ids never given again
                tables = conn.execute(text("SELECT sql FROM sqlite_master WHERE name IN ('message', 'conversation')"))
                assert all("AUTOINCREMENT" in sql for (sql,) in tables)
        assert after[0] == before[0]  # every message, column for column
        assert [row[: len(before[1][0])] for row in after[1]] == before[1]  # every conversation
        assert [(bool(h), s, c if isinstance(c, dict) else json.loads(c)) for h, s, c in added] == [(False, "", {})] * 2
        with Session(engine) as s:
            assert s.get(Conversation, 1).chat_metadata == {}
        assert [b.text for b in turns.story(engine, LOCAL_USER, 1)] == ["Hello.", "Hi!"]
        assert [b.role for b in turns.story(engine, LOCAL_USER, 1)] == [Role.ASSISTANT, Role.USER]
    finally:
        engine.dispose()


# -- the chat page -----------------------------------------------------------------------------------------
def _chat_page(chat: int, character: int):
    return new_app("pages/chat.py", character=character, conversation=chat)


def test_the_chat_page_shows_narration_hidden_lines_and_the_author_note_and_hides_from_a_menu(app_env, app_db) -> None:
    sera = characters.create(app_db, LOCAL_USER, {"name": "Seraphina"}, [_image()]).id
    chat = conversations.import_jsonl(app_db, LOCAL_USER, sera, jsonl(HEADER, *ONE_ON_ONE), "glade.jsonl")
    at = _chat_page(chat.conversation.id, sera)
    assert not at.exception
    bubbles = turns.story(app_db, LOCAL_USER, chat.conversation.id)
    shown = [(m.name, [c.value for c in m.caption]) for m in at.chat_message]
    narrator = next(i for i, b in enumerate(bubbles) if b.is_narrator)
    assert shown[narrator][0] == "narrator" and "Narrator" in shown[narrator][1]  # not the character's line
    hidden = [i for i, b in enumerate(bubbles) if b.hidden]
    for i, (_, captions) in enumerate(shown):  # dimmed and labelled: exactly the hidden ones
        assert any("Hidden from the character" in c for c in captions) == (i in hidden), shown[i]
    assert any("Seraphina speaks softly." in t.value for t in at.sidebar.text)  # the author's note, read-only
    # Only the character's own last line gets Regenerate (not the narrator's, nor the user's).
    last_reply = max(b.turn for b in bubbles if b.role == Role.ASSISTANT)
    assert [b.key for b in at.button if b.key and b.key.startswith("regen_")] == [f"regen_{last_reply}"]
    assert any(b.label == "Get a reply" for b in at.button)  # the last line is the user's

    # Hide the first reply from its menu: saved, left out of the prompt, offered back as "show".
    first_reply = next(b for b in bubbles if b.role == Role.ASSISTANT)
    next(b for b in at.button if b.key == f"hide_{first_reply.turn}").click().run()
    assert turns.story(app_db, LOCAL_USER, chat.conversation.id)[0].hidden
    assert next(b for b in at.button if b.key == f"hide_{first_reply.turn}").label == "Show to the character again"
    prompt = turns.request_for(app_db, LOCAL_USER, chat.conversation.id)
    assert first_reply.text not in [t.text for t in prompt.history]
    next(b for b in at.button if b.key == f"hide_{first_reply.turn}").click().run()
    assert not turns.story(app_db, LOCAL_USER, chat.conversation.id)[0].hidden


def test_a_group_chat_names_each_speaker_and_says_it_goes_on_with_one(app_env, app_db) -> None:
    sera = characters.create(app_db, LOCAL_USER, {"name": "Seraphina"}, [_image()]).id
    chat = conversations.import_jsonl(app_db, LOCAL_USER, sera, jsonl(*GROUP), "group.jsonl")
    at = _chat_page(chat.conversation.id, sera)
    assert not at.exception
    assert any("group chat with Eldric" in i.value and "Seraphina alone" in i.value for i in at.info)
    first_captions = [[c.value for c in m.caption] for m in at.chat_message]
    assert "Eldric" in first_captions[1] and "Seraphina" not in first_captions[0]  # her own lines need no label


def test_importing_says_what_was_kept_hidden_narrated_and_who_else_spoke(app_env, app_db) -> None:
    sera = characters.create(app_db, LOCAL_USER, {"name": "Seraphina"}, [_image()]).id
    at = _chat_page(conversations.start(app_db, LOCAL_USER, sera).id, sera)
    uploader = next(u for u in at.file_uploader if u.key.startswith("chat_import"))
    uploader.set_value(("group.jsonl", jsonl(*GROUP), "application/jsonl")).run()
    toasts = " ".join(t.value for t in at.toast)
    assert "1 hidden message stays hidden" in toasts and "1 narrator line" in toasts and "Eldric" in toasts


def test_after_a_narrator_line_the_character_is_asked_to_reply_not_the_narrator_regenerated(app_env, app_db) -> None:
    sera = characters.create(app_db, LOCAL_USER, {"name": "Seraphina"}, [_image()]).id
    chat = conversations.import_jsonl(app_db, LOCAL_USER, sera, jsonl(HEADER, *ONE_ON_ONE[:4]), "storm.jsonl")
    at = _chat_page(chat.conversation.id, sera)
    reply = max(b.turn for b in turns.story(app_db, LOCAL_USER, chat.conversation.id) if b.role == Role.ASSISTANT)
    assert [b.key for b in at.button if b.key and b.key.startswith("regen_")] == [f"regen_{reply}"]
    assert any(b.label == "Get a reply" for b in at.button)  # the storm waits for the character's answer


# -- shapes and names as SillyTavern really writes them ----------------------------------------------------------
def _line(**more) -> dict:
    return {"name": "Seraphina", "is_user": False, "is_system": False, "send_date": "March 2, 2025 6:04pm",
            "extra": {}, **more}  # fmt: skip


def _round_trip(engine, character: int, *lines: dict, header: dict = HEADER) -> list[dict]:
    chat = conversations.import_jsonl(engine, LOCAL_USER, character, jsonl(header, *lines), "t.jsonl").conversation
    return story_lines(engine, chat.id)[1:]


@pytest.mark.parametrize("swipe_id", ["missing", 5, -1, "1", True])
def test_a_swipe_id_that_names_no_swipe_never_costs_a_swipe(engine, seraphina, swipe_id) -> None:
    """SillyTavern shows `mes`: the swipe that says it is the chosen one; where none does, `mes` is one
    more alternative. No swipe is ever written over."""
    line = _line(mes="Second take.", swipes=["First take.", "Second take."])
    if swipe_id != "missing":
        line["swipe_id"] = swipe_id
    (out,) = _round_trip(engine, seraphina, line)
    assert (out["swipes"], out["swipe_id"], out["mes"]) == (["First take.", "Second take."], 1, "Second take.")
    (out,) = _round_trip(engine, seraphina, {**line, "mes": "Edited."})
    assert (out["swipes"], out["swipe_id"]) == (["First take.", "Second take.", "Edited."], 2)


def test_sillytavern_s_own_line_shapes_come_back_as_they_were(engine, seraphina) -> None:
    """A real `/sys` line has `"is_system": ""` (`sendNarratorMessage`: `bias && …` with no bias); a
    swipe_info shorter or longer than the swipes, or with an entry that is not an object, is written
    back as it was, never with made-up entries; a line with none of the keys a swipe carries gets none
    from its swipe_info; TavernAI's lines without `is_system` stay without."""
    narrator = {"name": "System", "is_user": False, "is_system": "", "send_date": "March 2, 2025 6:06pm",
                "mes": "A storm rolls in.", "force_avatar": "img/five.png", "extra": NARRATOR_EXTRA}  # fmt: skip
    short = _line(mes="C", swipes=["A", "B", "C"], swipe_id=2, swipe_info=[{"send_date": 1740938850000}])
    odd = _line(mes="B", swipes=["A", "B"], swipe_id=1, swipe_info=["junk", None, {"send_date": 1}])
    bare = {"name": "Seraphina", "is_user": False, "mes": "Hi.", "swipes": ["Hi."], "swipe_id": 0,
            "swipe_info": [{"send_date": 1740938850000, "extra": {"api": "openai"}}]}  # fmt: skip
    lines = [narrator, short, odd, bare]
    assert _round_trip(engine, seraphina, *lines) == lines
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(HEADER, narrator), "n.jsonl").conversation
    conversations.set_hidden(engine, LOCAL_USER, chat.id, 0, True)  # hidden here: SillyTavern's own `true`
    assert story_lines(engine, chat.id)[1]["is_system"] is True


def test_a_narrator_line_whose_other_swipe_has_an_odd_extra_still_exports(engine, seraphina) -> None:
    storm = {"name": "System", "is_user": False, "is_system": False, "send_date": 1740938850000, "mes": "Storm.",
             "extra": {"type": "narrator"}, "swipes": ["Rain.", "Storm."], "swipe_id": 1,
             "swipe_info": [{"send_date": 1740938840000, "extra": "x"}, {"send_date": 1740938850000,
                                                                           "extra": {"type": "narrator"}}]}  # fmt: skip
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(HEADER, storm), "storm.jsonl").conversation
    turns.delete(engine, LOCAL_USER, chat.id, 0)  # the shown swipe: "Rain." is shown now
    (line,) = story_lines(engine, chat.id)[1:]
    assert (line["mes"], line["extra"]) == ("Rain.", {"type": "narrator"})  # still a narrator line


def test_a_character_s_own_lines_are_decided_on_import_not_by_its_name_now(engine) -> None:
    """The character's own lines are those under the name the file gives it (its header's), the name it
    has here when imported, `{{char}}`; they stay its own when it is renamed here. Another name (a
    `/sendas` line, a group member) is someone else's. The file's names are written back."""
    mira = characters.create(engine, LOCAL_USER, {"name": "Mira"}, [_image()]).id
    header = {"user_name": "Rowan", "character_name": "Mira the Keeper", "create_date": "2025-03-02@18h04m11s"}
    lines = [_line(name="Mira the Keeper", mes="Hello, traveller."), {"name": "Rowan", "mes": "Hi.", **USER},
             _line(name="Mira", mes="Sit down."), _line(name="{{char}}", mes="Tea?"),
             _line(name="Eldric", mes="Room for one more?")]  # fmt: skip
    imported = conversations.import_jsonl(engine, LOCAL_USER, mira, jsonl(header, *lines), "mira.jsonl")
    chat = imported.conversation.id
    characters.update(engine, LOCAL_USER, mira, {"name": "Mira of the Pier"})
    assert imported.speakers == ("Eldric",) and conversations.speakers(engine, LOCAL_USER, chat) == ["Eldric"]
    assert [b.speaker for b in turns.story(engine, LOCAL_USER, chat) if not b.is_user] == ["", "", "", "Eldric"]
    history = [(t.role, t.text) for t in turns.request_for(engine, LOCAL_USER, chat).history]
    assert history == [("assistant", "Hello, traveller."), ("user", "Hi."), ("assistant", "Sit down."),
                       ("assistant", "Tea?"), ("user", "Eldric: Room for one more?")]  # fmt: skip
    header_out, *out = story_lines(engine, chat)
    assert [line["name"] for line in out] == ["Mira the Keeper", "Rowan", "Mira", "{{char}}", "Eldric"]
    assert header_out["character_name"] == "Mira of the Pier"
    # A group chat (no header): the lines under the character's name (or `{{char}}`) when imported are hers.
    group = [group_line("Mira", "Welcome.", "March 3, 2025 9:00am", is_group=True),
             group_line("Eldric", "Sit.", "March 3, 2025 9:00am"),
             group_line("{{char}}", "Tea?", "March 3, 2025 9:01am")]  # fmt: skip
    grouped = conversations.import_jsonl(engine, LOCAL_USER, mira, jsonl(*group), "g.jsonl")
    assert grouped.speakers == ("Mira", "Eldric")  # not this character's name any more: someone else's lines
    mira_now = characters.create(engine, LOCAL_USER, {"name": "Mira"}, [_image()]).id
    grouped = conversations.import_jsonl(engine, LOCAL_USER, mira_now, jsonl(*group), "g.jsonl")
    assert grouped.speakers == ("Eldric",)
    characters.update(engine, LOCAL_USER, mira_now, {"name": "Mira the Keeper"})
    assert conversations.speakers(engine, LOCAL_USER, grouped.conversation.id) == ["Eldric"]
    assert [line["name"] for line in story_lines(engine, grouped.conversation.id)[1:]] == ["Mira", "Eldric", "{{char}}"]


def test_a_speaker_s_long_name_is_shown_cut_said_so_and_written_back_whole(engine, seraphina) -> None:
    long = "Eldric " + "the Very Old " * 30
    group = [group_line("Seraphina", "Welcome.", "March 3, 2025 9:00am", is_group=True),
             group_line(long, "Sit.", "March 3, 2025 9:00am")]  # fmt: skip
    imported = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(*group), "g.jsonl")
    assert imported.names_cut == 1 and len(imported.speakers[0]) == conversations.MAX_SPEAKER
    assert story_lines(engine, imported.conversation.id)[2]["name"] == long


def test_a_time_written_without_a_zone_is_the_importing_viewer_s_local_time(engine, seraphina) -> None:
    """SillyTavern's "June 19, 2023 2:20pm" is the writer's local time; its reader shows it as the
    viewer's (moment reads a time without a zone as local), and so do we: 2:20pm to the one who imports
    it. The humanized form stays UTC, as SillyTavern's reader takes it; the file's strings come back."""
    lines = [
        _line(send_date="June 19, 2023 2:20pm", mes="Hi."),
        _line(send_date="2023-6-19 @14h 20m 00s 000ms", mes="Yo."),
    ]
    raw = jsonl(HEADER, *lines)
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, raw, "t.jsonl", ZoneInfo("America/New_York"))
    meridiem, humanized = (as_utc(b.updated_at) for b in turns.story(engine, LOCAL_USER, chat.conversation.id))
    assert (meridiem.hour, humanized.hour) == (18, 14)  # 2:20pm in New York (EDT) is 18:20 UTC
    assert [line["send_date"] for line in story_lines(engine, chat.conversation.id)[1:]] == [
        "June 19, 2023 2:20pm", "2023-6-19 @14h 20m 00s 000ms"]  # fmt: skip


def test_the_conversation_list_leaves_out_the_chat_settings_and_the_note_still_shows(engine, seraphina) -> None:
    big = {**HEADER, "chat_metadata": {**HEADER["chat_metadata"], "blob": "x" * 2**20}}
    chat = conversations.import_jsonl(engine, LOCAL_USER, seraphina, jsonl(big, *ONE_ON_ONE), "big.jsonl").conversation
    (listed,) = conversations.for_character(engine, LOCAL_USER, seraphina)
    assert "chat_metadata" in inspect(listed).unloaded  # a megabyte not read on every run of the chat page
    note = conversations.author_note(engine, LOCAL_USER, listed.id)
    assert note.text == "Seraphina speaks softly."  # read for the one shown
    assert story_lines(engine, chat.id)[0]["chat_metadata"]["blob"] == "x" * 2**20  # and the export has it all


def test_after_a_rename_the_chat_page_still_knows_the_character_s_own_lines(app_env, app_db) -> None:
    mira = characters.create(app_db, LOCAL_USER, {"name": "Mira"}, [_image()]).id
    header = {"user_name": "Rowan", "character_name": "Mira"}
    lines = [_line(name="Mira", mes="Hello."), {"name": "Rowan", "mes": "Hi.", **USER}, _line(name="Mira", mes="Sit.")]
    chat = conversations.import_jsonl(app_db, LOCAL_USER, mira, jsonl(header, *lines), "m.jsonl").conversation.id
    characters.update(app_db, LOCAL_USER, mira, {"name": "Mira the Keeper"})
    at = _chat_page(chat, mira)
    assert not at.exception
    assert not any("group chat" in i.value for i in at.info)  # not a group because her name changed
    assert not any(c.value == "Mira" for m in at.chat_message for c in m.caption)  # her own lines need no label


def _chat_page_in(zone: str, chat: int, character: int):
    """The chat page as a browser in `zone` shows it."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120)
    at.context["timezone"] = zone
    at.query_params.update(character=str(character), conversation=str(chat))
    at.run()
    return at.switch_page("pages/chat.py").run()


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo"])  # west and east of UTC
def test_chats_dated_at_the_ends_of_the_calendar_open_in_any_time_zone(app_env, app_db, zone: str) -> None:
    """A file dated year 1 or 9999 is read as dated now (no chat's time); one stored so before (an older
    import, a backup) is shown in UTC where the browser's zone cannot hold it, never an error."""
    sera = characters.create(app_db, LOCAL_USER, {"name": "Seraphina"}, [_image()]).id
    chats = []
    for when in ("0001-01-01T00:00:00Z", -62135596800000, "9999-12-31T23:59:59Z"):
        raw = jsonl({**HEADER, "create_date": when}, _line(send_date=when, mes="Hi."))
        chat = conversations.import_jsonl(app_db, LOCAL_USER, sera, raw, ".jsonl").conversation  # untitled
        assert 1970 <= conversations.get(app_db, LOCAL_USER, chat.id).created_at.year < 9000
        chats.append(chat.id)
    with Session(app_db) as s:  # stored before times were checked
        for chat, when in zip(chats, (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
                              strict=False):  # fmt: skip
            s.get(Conversation, chat).created_at = when
        s.commit()
    at = _chat_page_in(zone, chats[0], sera)
    assert not at.exception
    labels = [label for radio in at.sidebar.radio for label in radio.options]
    assert any("0001-01-01" in label for label in labels) and any("9999-12-31" in label for label in labels)


def test_importing_says_when_a_speaker_s_name_is_shown_cut(app_env, app_db) -> None:
    sera = characters.create(app_db, LOCAL_USER, {"name": "Seraphina"}, [_image()]).id
    at = _chat_page(conversations.start(app_db, LOCAL_USER, sera).id, sera)
    group = [group_line("Seraphina", "Welcome.", "March 3, 2025 9:00am", is_group=True),
             group_line("Eldric " + "the Very Old " * 30, "Sit.", "March 3, 2025 9:00am")]  # fmt: skip
    uploader = next(u for u in at.file_uploader if u.key.startswith("chat_import"))
    uploader.set_value(("long.jsonl", jsonl(*group), "application/jsonl")).run()
    assert "1 speaker's name is longer than 200 characters" in " ".join(t.value for t in at.toast)
