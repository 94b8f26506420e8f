"""Pages stay fast as data grows: the Library a page at a time, the Chat its latest messages, lists
that never read a full picture, and a model that can start loading with the server (real pages in
AppTest, a real SQLite file). The timings themselves are in `bench/scale.py`."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event
from sqlmodel import Session

from core.base.sheets import prepare_image
from core.services import characters, conversations
from core.services.users import LOCAL_USER
from storage import characters as chars
from storage import conversations as convs
from storage.db import session_scope
from storage.tables import Role
from tests.conftest import new_app
from tests.test_app import button, chat_texts

pytestmark = pytest.mark.slow


def card_names(at) -> list[str]:
    return [m.value.strip("*") for m in at.markdown if m.value.startswith("**Character ")]


def test_the_library_shows_a_page_at_a_time(app_env, app_db, neutral_png) -> None:
    sheet = prepare_image(neutral_png, "sheet.png")
    for n in range(30):
        characters.create(app_db, LOCAL_USER, {"name": f"Character {n}"}, [sheet])
    at = new_app("pages/library.py")
    assert card_names(at) == [f"Character {n}" for n in range(29, 5, -1)]  # 24, newest first
    assert any("Page 1 of 2 · 30 characters" in c.value for c in at.caption)
    button(at, "Next").click().run()
    assert card_names(at) == [f"Character {n}" for n in range(5, -1, -1)]
    assert any("Page 2 of 2" in c.value for c in at.caption)
    at.text_input(key="library_query").input("Character 7").run()  # a search starts at its first page
    assert card_names(at) == ["Character 7"]
    assert not [c for c in at.caption if "Page" in c.value]  # one page: no pager


def test_a_long_conversation_shows_its_latest_messages_and_earlier_ones_on_request(app_env, app_db, neutral_png):
    character = characters.create(app_db, LOCAL_USER, {"name": "Sera", "first_mes": "0. Hello."},
                                  [prepare_image(neutral_png, "sheet.png")]).id  # fmt: skip
    chat = conversations.start(app_db, LOCAL_USER, character).id
    with session_scope(app_db) as s:
        for n in range(1, 100):
            convs.append_message(s, chat, Role.USER if n % 2 == 0 else Role.ASSISTANT, f"{n}. Words.")
    at = new_app("pages/chat.py", character=character, conversation=chat)
    shown = [text for _, text in chat_texts(at)]
    assert shown == [f"{n}. Words." for n in range(60, 100)]  # the latest forty
    button(at, "Show earlier messages").click().run()
    assert [text for _, text in chat_texts(at)][:2] == ["20. Words.", "21. Words."]
    button(at, "Show earlier messages").click().run()
    everything = [text for _, text in chat_texts(at)]
    assert everything == ["0. Hello."] + [f"{n}. Words." for n in range(1, 100)]
    assert not [b for b in at.button if b.label == "Show earlier messages"]  # nothing earlier


def test_lists_never_read_a_full_picture(app_db, app_env, neutral_png) -> None:
    characters.create(app_db, LOCAL_USER, {"name": "Sera"}, [prepare_image(neutral_png, "sheet.png")])
    statements: list[str] = []
    event.listen(app_db, "before_cursor_execute", lambda *args: statements.append(args[2].lower()))
    characters.summaries(app_db, LOCAL_USER)
    characters.names(app_db, LOCAL_USER)
    conversations.recent(app_db, LOCAL_USER)
    with Session(app_db) as s:
        assert chars.get_images(s, 1)[0].thumbnail  # an image row has its thumbnail, not its picture
    assert statements and not [sql for sql in statements if "imagebytes" in sql]


def test_with_preload_the_model_loads_before_anyone_asks_for_a_reply(app_env, monkeypatch) -> None:
    monkeypatch.setenv("REFSHEET_PRELOAD", "1")
    at = new_app()  # the first page view, as a browser opening the app
    deadline = time.time() + 120
    while not any("Model ready" in s.value for s in at.success):
        assert time.time() < deadline, [i.value for i in at.info]
        time.sleep(0.5)
        at.run()
    assert not at.exception
