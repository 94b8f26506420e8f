"""What a new user met, round 2 (issue 22, items 8–15), one test each, through the real pages
(AppTest) and services, with the tiny local model or no model at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from core.services import characters, conversations, turns
from core.services.access import LOCAL_USER
from core.services.users import current, save_language, save_persona
from storage import conversations as convs
from storage.db import session_scope
from storage.tables import Conversation, MessageStatus
from tests.conftest import new_app, sheet_image

pytestmark = pytest.mark.slow


def seed(db, **profile) -> int:
    return characters.create(db, LOCAL_USER, {"name": "Sera", "first_mes": "Hello.", **profile}, [sheet_image()]).id


def test_8_the_interface_language_is_kept_for_the_next_visit(app_env, app_db) -> None:
    at = new_app()
    at.selectbox(key="ui_lang").set_value("zh").run()
    assert at.title[0].value == "RefSheet Chat 角色设定图聊天"
    assert any("refsheet_lang=zh" in h.proto.body for h in at.get("html"))  # this browser remembers it too
    again = new_app()  # a reload, a new tab or a restarted server: a new session
    assert again.title[0].value == "RefSheet Chat 角色设定图聊天"
    assert current(app_db, LOCAL_USER).ui_language == "zh"  # kept for the person (here, the install)


def test_8_a_signed_in_persons_language_follows_them(engine) -> None:
    from tests.conftest import person

    ann, bob = person(engine, "ann"), person(engine, "bob")
    save_language(engine, ann, "zh")
    assert current(engine, ann).ui_language == "zh" and current(engine, bob).ui_language == ""


def test_9_your_message_is_kept_is_said_only_where_a_message_waits(app_env, app_db, monkeypatch) -> None:
    from bench.servers import free_port

    monkeypatch.setenv("REFSHEET_BACKEND", "openai")
    monkeypatch.setenv("REFSHEET_API_BASE", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens
    monkeypatch.setenv("REFSHEET_API_MODEL", "gemma3:4b")
    home = new_app()
    assert home.error and all("saved" not in e.value for e in home.error)  # nothing was sent from Home
    chat = new_app("pages/chat.py", character=seed(app_db))
    chat.chat_input[0].set_value("Are you there?").run()
    assert any("cannot be reached" in e.value for e in chat.error)
    assert any("Your message is saved" in c.value for c in chat.caption)  # here one waits for its reply


def test_10_your_own_stopped_reply_is_not_someone_elses_being_written(app_env, app_db) -> None:
    character = seed(app_db)
    chat = conversations.start(app_db, LOCAL_USER, character).id
    turns.send(app_db, LOCAL_USER, chat, "Tell me a story.")
    with session_scope(app_db) as s:  # the stream stopped, its last save still on its way
        row = convs.append_message(s, chat, "assistant", "Once upon", status=MessageStatus.WRITING)
        mine = row.id
    at = new_app("pages/chat.py", character=character, conversation=chat)
    assert any("Being written right now" in c.value for c in at.caption)  # to another tab: someone writes it
    at.session_state["own_reply"] = mine  # this session wrote it, and pressed Stop
    at.run()
    assert not any("Being written right now" in c.value for c in at.caption)
    assert any(c.value.startswith("Unfinished") for c in at.caption)


@pytest.mark.parametrize("link", [{"character": "0"}, {"character": "-1"}, {"character": "abc"},
                                  {"character": "999999"}, {"conversation": "abc"}])  # fmt: skip
def test_11_a_bad_deep_link_says_so_instead_of_silently_opening_another(app_env, app_db, link) -> None:
    character = seed(app_db)
    conversations.start(app_db, LOCAL_USER, character)
    at = new_app("pages/chat.py", **({"character": character} | link))
    assert any("is not here" in w.value for w in at.warning), [w.value for w in at.warning]


def test_11_a_mismatched_pair_starts_nothing(app_env, app_db) -> None:
    first, second = seed(app_db), seed(app_db, name="Mira", first_mes="")  # Mira greets from her sheet
    other = conversations.start(app_db, LOCAL_USER, first).id
    at = new_app("pages/chat.py", character=second, conversation=other)
    assert any("is not here" in w.value for w in at.warning)
    with Session(app_db) as s:  # no conversation made for Mira, no greeting written
        assert s.exec(select(func.count(Conversation.id)).where(Conversation.character_id == second)).one() == 0


def test_12_delete_asks_first_and_takes_one_alternative(app_env, app_db) -> None:
    character = seed(app_db, alternate_greetings=["Hi there.", "Welcome."])
    chat = conversations.start(app_db, LOCAL_USER, character).id
    at = new_app("pages/chat.py", character=character, conversation=chat)
    next(b for b in at.button if b.key == "del_0").click().run()
    assert any("This alternative goes" in m.value for m in at.markdown)  # the dialog asks
    next(b for b in at.button if b.key == "confirm_message_delete_no").click().run()
    assert [b.variants for b in turns.story(app_db, LOCAL_USER, chat)] == [3]  # Cancel: nothing went
    next(b for b in at.button if b.key == "del_0").click().run()
    next(b for b in at.button if b.key == "confirm_message_delete_yes").click().run()
    (greeting,) = turns.story(app_db, LOCAL_USER, chat)
    assert greeting.variants == 2  # one alternative went, not the message


def test_13_a_persona_set_later_reads_in_old_greetings(app_env, app_db) -> None:
    character = seed(app_db, first_mes="Hello, {{user}}.")
    chat = conversations.start(app_db, LOCAL_USER, character).id
    assert turns.story(app_db, LOCAL_USER, chat)[0].text == "Hello, you."
    me = save_persona(app_db, LOCAL_USER, "Alex", "")
    assert turns.story(app_db, me, chat)[0].text == "Hello, Alex."  # the same stored greeting
    assert turns.request_for(app_db, me, chat).history[0].text == "Hello, Alex."  # and what the model reads


def test_14_a_draft_without_a_model_shows_no_success_above_its_error(app_env, app_db, monkeypatch) -> None:
    monkeypatch.setenv("REFSHEET_MODEL", str(Path(app_env) / "no-such-model"))
    at = new_app("pages/create.py")
    at.file_uploader(key="main_0").set_value(("sheet.png", sheet_image().data, "image/png")).run()
    next(b for b in at.button if b.key == "draft_all_0").click().run()
    assert any("does not exist" in e.value for e in at.error)
    assert not at.get("status")  # the loading box is gone, not left saying "done" above the error


def test_14_a_draft_stopped_before_its_first_word_says_so(app_env, app_db) -> None:
    at = new_app("pages/create.py")
    at.session_state["draft_partial_0"] = ("", None)  # Stop came while the model was still reading
    at.run()
    assert any("Stopped before the model had written anything" in w.value for w in at.warning)


def test_15_the_first_reply_counts_the_models_loading_in_its_wait(app_env, app_db) -> None:
    at = new_app("pages/chat.py", character=seed(app_db))
    at.chat_input[0].set_value("Hello!").run()
    (*_, reply) = turns.story(app_db, LOCAL_USER, int(at.query_params["conversation"]))
    assert reply.stats["queued_s"] > 0.05  # the load it waited for, not just the queue


def test_15_home_says_a_gemma_3_model_without_local_for_a_server(app_env, remote_env) -> None:
    home = new_app()
    assert "A Gemma 3 model" in home.markdown[0].value and "local" not in home.markdown[0].value


def test_15_a_tiny_models_size_is_not_zero_mb() -> None:
    from core.model.backends.gemma.backend import size_text

    assert size_text(900_000) == "879 kB" and size_text(3 * 2**20) == "3 MB" and size_text(5 * 2**30) == "5.0 GB"
