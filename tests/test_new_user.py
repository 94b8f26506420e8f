"""What a new user hit (issue 11), each through the real app in AppTest with the tiny offline Gemma 3.

Each test failed before its fix; the browser test covers the same-name, language and waiting items too.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from sqlmodel import Session

from core.base.sampling import SamplerSettings
from core.services import conversations, turns
from core.services.users import LOCAL_USER
from storage import conversations as convs
from storage.db import session_scope
from storage.tables import Message, MessageStatus, Role, utcnow
from tests.conftest import new_app
from tests.test_app import button, chat_texts, seed_character

pytestmark = pytest.mark.slow


def captions(at) -> list[str]:
    return [c.value.lower() for c in at.caption]


# 1 ------------------------------------------------------------------------------------------------
def test_same_named_characters_keep_their_own_conversations(app_env, app_db, neutral_png, joy_png) -> None:
    first = seed_character(app_db, neutral_png, name="Seraphina", first_mes="Hello from the first.")
    second = seed_character(app_db, joy_png, name="Seraphina", first_mes="Hello from the second.")
    at = new_app("pages/chat.py", character=second)
    assert chat_texts(at) == [("assistant", "Hello from the second.")]
    labels = at.selectbox(key="character_pick").options
    assert len(set(labels)) == len(labels) == 2  # every option can be told apart
    at.chat_input[0].set_value("Which one are you?").run()
    assert int(at.query_params["character"]) == second
    with Session(app_db) as s:
        assert convs.list_conversations(s, first) == []  # nothing was written into the first one
        (conversation,) = convs.list_conversations(s, second)
        assert [m.text for m in convs.list_messages(s, conversation.id)][:2] == [
            "Hello from the second.",
            "Which one are you?",
        ]


# 2 ------------------------------------------------------------------------------------------------
def test_a_reply_still_being_written_says_so_to_another_viewer(app_env, app_db, neutral_png, chat_engine) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    conversation = conversations.start(app_db, LOCAL_USER, character).id
    turns.send(app_db, LOCAL_USER, conversation, "Tell me everything.")
    conversations.save_sampler(app_db, LOCAL_USER, conversation, SamplerSettings(temperature=0, max_new_tokens=300))
    run = turns.reply(app_db, LOCAL_USER, chat_engine, conversation)  # another tab is writing it
    next(run)
    viewer = new_app("pages/chat.py", character=character, conversation=conversation)
    assert any("being written" in c for c in captions(viewer))
    assert not any("unfinished" in c for c in captions(viewer))
    rest = "".join(run)
    viewer.run()  # its refresh
    assert chat_texts(viewer)[-1][1].endswith(rest) and not any("being written" in c for c in captions(viewer))

    # A writer that died (the server was killed) stops renewing its claim: then it is unfinished.
    with session_scope(app_db) as s:
        row = s.get(Message, run.message_id)
        row.status, row.updated_at = MessageStatus.WRITING, utcnow() - timedelta(minutes=2)
        s.add(row)
    again = new_app("pages/chat.py", character=character, conversation=conversation)
    assert any("unfinished" in c for c in captions(again)) and not any("being written" in c for c in captions(again))


# 3 ------------------------------------------------------------------------------------------------
def test_the_chosen_language_holds_across_pages(app_env) -> None:
    at = new_app()
    at.selectbox(key="ui_lang").set_value("zh").run()
    assert at.title[0].value == "RefSheet Chat 角色设定图聊天"
    at.switch_page("pages/library.py").run()
    assert at.title[0].value == "角色库"
    at.switch_page("pages/create.py").run()
    assert at.title[0].value == "创建角色"
    at.switch_page("pages/home.py").run()
    assert at.title[0].value == "RefSheet Chat 角色设定图聊天"


# 4 ------------------------------------------------------------------------------------------------
def test_a_saved_failure_reads_in_the_viewers_language(app_env, app_db, neutral_png, monkeypatch) -> None:
    monkeypatch.setenv("REFSHEET_CONTEXT_TOKENS", "300")  # the tiny model's character alone is ~900 tokens
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    at.selectbox(key="ui_lang").set_value("zh").run()
    at.chat_input[0].set_value("你好").run()
    assert any("此回复生成失败：仅这个角色" in e.value for e in at.error)
    at.selectbox(key="ui_lang").set_value("en").run()
    assert any("This reply failed: This character alone" in e.value for e in at.error)
    assert not any("仅这个角色" in e.value for e in at.error)


# 7 ------------------------------------------------------------------------------------------------
def _reply_with_stats(db, character: int, **stats) -> int:
    conversation = conversations.start(db, LOCAL_USER, character).id
    with session_scope(db) as s:
        convs.append_message(s, conversation, Role.USER, "Hi")
        message = convs.append_message(s, conversation, Role.ASSISTANT, "Hello.")
        convs.update_message(s, message.id, stats=stats)
    return conversation


def test_the_reply_caption_counts_the_wait_and_makes_sense_after_stop(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    waited = _reply_with_stats(app_db, character, queued_s=35.2, ttft_s=1.16, tokens_per_s=9.5, new_tokens=40,
                               prompt_tokens=500, prefilled_tokens=20, total_s=5.4)  # fmt: skip
    at = new_app("pages/chat.py", character=character, conversation=waited)
    (line,) = [c for c in captions(at) if "tokens/s" in c]
    assert "waited 35 s" in line and "first token 1.16 s" in line
    stopped = _reply_with_stats(app_db, character, queued_s=0.0, ttft_s=0.0, tokens_per_s=0.0, new_tokens=1,
                                prompt_tokens=500, prefilled_tokens=20, total_s=0.2, stopped=True)  # fmt: skip
    at = new_app("pages/chat.py", character=character, conversation=stopped)
    assert not any("0.0 tokens/s" in c or "0.00 s" in c for c in captions(at))
    assert any("stopped after 1 token" in c for c in captions(at))


# 9, 10 --------------------------------------------------------------------------------------------
def test_oversized_uploads_say_how_large_they_are(app_env, huge_png: bytes) -> None:
    at = new_app("pages/create.py")
    at.file_uploader(key="main_0").set_value(("huge_12000.png", huge_png, "image/png")).run()
    assert any("12000×12000 (144 megapixels)" in e.value for e in at.error)
    big = b"\x89PNG\r\n\x1a\n" + bytes(27 * 2**20)
    at.file_uploader(key="main_0").set_value(("big.png", big, "image/png")).run()
    assert any("“big.png” is 27 MB; the limit is 20 MB" in e.value for e in at.error)


# 11 -----------------------------------------------------------------------------------------------
def test_without_a_usable_model_one_error_and_one_button_that_works(
    app_env, app_db, neutral_png, tiny_checkpoint, tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "models" / "gemma-3-4b-it"
    monkeypatch.setenv("REFSHEET_MODEL", str(folder))
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    at.chat_input[0].set_value("Are you there?").run()
    main_errors = [e.value for e in at.main.error]
    assert len(main_errors) == 1 and "does not exist" in main_errors[0]
    assert not [i for i in at.main.info if "loads when the first reply is needed" in i.value]
    assert [b.label for b in at.button if b.label == "Try loading the model again"] == ["Try loading the model again"]

    shutil.copytree(tiny_checkpoint, folder)  # the user fixes it, reloads the page, and clicks once
    reloaded = new_app("pages/chat.py", character=character, conversation=int(at.query_params["conversation"]))
    assert not [b for b in reloaded.button if b.label == "Get a reply"]
    button(reloaded, "Try loading the model again").click().run()
    texts = chat_texts(reloaded)
    assert [r for r, _ in texts] == ["assistant", "user", "assistant"] and texts[-1][1]


def test_the_offline_message_mentions_the_licence_too() -> None:
    from core.model.backends.gemma.model import ModelLoadError

    message = ModelLoadError("offline", source="google/gemma-3-4b-it").message("en")
    assert "HF_TOKEN" in message and "licence" in message
    assert "HF_TOKEN" in ModelLoadError("offline", source="google/gemma-3-4b-it").message("zh")


# 12 -----------------------------------------------------------------------------------------------
def test_reply_settings_that_cannot_fit_are_refused(app_env, app_db, neutral_png, monkeypatch) -> None:
    monkeypatch.setenv("REFSHEET_CONTEXT_TOKENS", "2048")
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    at.chat_input[0].set_value("Hello!").run()  # the model is loaded now and knows its context
    conversation = int(at.query_params["conversation"])
    at.number_input[1].set_value(4096)
    next(b for b in at.button if b.key and b.key.startswith("FormSubmitter:sampler_")).click().run()
    assert any("at most" in e.value and "2048" in e.value for e in at.error)
    with Session(app_db) as s:
        assert convs.get_conversation(s, conversation).settings.get("max_new_tokens") != 4096


# 13 -----------------------------------------------------------------------------------------------
def test_an_imported_card_shows_everything_it_brings(app_env, shared) -> None:
    from core.formats.cards import read_card

    raw = (shared / "cards" / "default_Seraphina.png").read_bytes()
    data = read_card(raw).data
    at = new_app("pages/create.py")
    at.selectbox(key="ui_lang").set_value("zh").run()
    at.file_uploader(key="card_0").set_value(("default_Seraphina.png", raw, "image/png")).run()
    assert at.text_area(key="description_0").value == data["description"]
    assert at.text_area(key="mes_example_0").value == data["mes_example"]
    assert any(e.label.startswith("角色知识书：4 条") for e in at.expander)
    assert at.selectbox(key="language_0").value == "简体中文"  # no language in the card: the UI's


def test_a_cards_own_language_is_used(app_env) -> None:
    import json

    data = {"name": "Haru", "description": "A student.", "creator_notes_multilingual": {"ja": "日本のキャラ"}}
    card = {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}
    at = new_app("pages/create.py")
    at.file_uploader(key="card_0").set_value(("haru.json", json.dumps(card).encode(), "application/json")).run()
    assert at.selectbox(key="language_0").value == "日本語"


# 14 -----------------------------------------------------------------------------------------------
def test_role_play_text_keeps_tildes_and_dollars(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="*waves* Hi~ That costs $5, or $x^2$ gold~")
    at = new_app("pages/chat.py", character=character)
    shown = at.chat_message[0].markdown[0].value
    assert shown.startswith("*waves*")  # actions stay italic
    assert "Hi\\~" in shown and "\\$5" in shown and "\\$x^2\\$" in shown  # literal, not strikethrough or TeX


# 15 -----------------------------------------------------------------------------------------------
def test_the_chat_page_shows_the_model_status_once(app_env, app_db, neutral_png) -> None:
    character = seed_character(app_db, neutral_png, first_mes="Hello.")
    at = new_app("pages/chat.py", character=character)
    status = [e.value for e in [*at.info, *at.success] if "Model" in e.value or "model" in e.value]
    assert len(status) == 1, status


def test_the_card_import_comes_before_the_uploads(app_env) -> None:
    at = new_app("pages/create.py")
    assert [u.key for u in at.file_uploader] == ["card_0", "main_0", "extra_0"]


def test_library_cards_tell_same_names_apart(app_env, app_db, neutral_png, joy_png) -> None:
    seed_character(app_db, neutral_png, name="Seraphina", notes="The forest guardian")
    seed_character(app_db, joy_png, name="Seraphina", notes="My own version, in a red dress")
    at = new_app("pages/library.py")
    cards = [c for c in captions(at) if "Seraphina" in c or "guardian" in c or "red dress" in c]
    assert any("forest guardian" in c for c in cards) and any("red dress" in c for c in cards)
