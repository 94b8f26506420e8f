"""Nothing is lost: the reply row is saved while it streams and closed out however it ends."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session

from core.base.sampling import SamplerSettings
from core.base.sheets import prepare_image
from core.model.backend import ContextOverflow
from core.model.backends.gemma.engine import ChatEngine
from core.services import characters, conversations, turns
from core.services.users import LOCAL_USER
from storage import conversations as convs
from storage.tables import Message, MessageStatus


@pytest.fixture
def conversation(engine, neutral_png: bytes) -> int:
    character = characters.create(
        engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hi."}, [prepare_image(neutral_png, "sheet.png")]
    )
    conv = conversations.start(engine, LOCAL_USER, character.id)
    assert [b.text for b in turns.story(engine, LOCAL_USER, conv.id)] == ["Hi."]  # the saved greeting
    turns.send(engine, LOCAL_USER, conv.id, "Tell me a long story about the forest and its guardians")
    conversations.save_sampler(engine, LOCAL_USER, conv.id, SamplerSettings(temperature=0, max_new_tokens=400))
    return conv.id


def _reply(engine, chat_engine: ChatEngine, conversation: int, stop: threading.Event | None = None):
    run = turns.reply(engine, LOCAL_USER, chat_engine, conversation, stop=stop)
    return run.message_id, run


def _row(engine, message_id: int) -> Message:
    with Session(engine) as s:
        return s.get(Message, message_id)


def test_the_user_message_and_an_unfinished_reply_row_exist_before_generation(engine, chat_engine, conversation):
    message_id, _ = _reply(engine, chat_engine, conversation)  # started, not iterated yet
    with Session(engine) as s:
        texts = [(m.role, m.text, m.status) for m in convs.list_messages(s, conversation)]
    assert texts[1] == ("user", "Tell me a long story about the forest and its guardians", "complete")
    # Claimed by its writer: a crash now leaves a row whose claim lapses, read as an unfinished reply.
    assert texts[2] == ("assistant", "", "writing")
    assert _row(engine, message_id).status == MessageStatus.WRITING


def test_reply_is_saved_while_it_streams_then_completed(engine, chat_engine, conversation, monkeypatch) -> None:
    monkeypatch.setattr(turns, "FLUSH_CHUNKS", 5)
    message_id, chunks = _reply(engine, chat_engine, conversation)
    seen, saved_midway = [], None
    for chunk in chunks:
        seen.append(chunk)
        if len(seen) == 30:
            saved_midway = _row(engine, message_id)
    assert saved_midway is not None and saved_midway.text and "".join(seen).startswith(saved_midway.text)
    assert saved_midway.status == MessageStatus.WRITING
    final = _row(engine, message_id)
    assert final.text == "".join(seen) and final.stats["new_tokens"] == 400 and final.stats["prompt_tokens"] > 0
    # 400 tokens of the tiny model's prose reach the longest reply asked for: unfinished (Continue writes
    # on), not stopped by anyone; a reply the model ends itself is complete.
    assert (final.status, final.stats["finish"], final.stats["stopped"]) == (MessageStatus.PARTIAL, "length", False)


def test_stop_keeps_the_partial_reply(engine, chat_engine, conversation) -> None:
    stop = threading.Event()
    message_id, chunks = _reply(engine, chat_engine, conversation, stop)
    seen = []
    for chunk in chunks:
        seen.append(chunk)
        if len(seen) == 10:
            stop.set()
    row = _row(engine, message_id)
    assert row.status == MessageStatus.PARTIAL and row.text == "".join(seen) and row.stats["stopped"]
    assert row.stats["new_tokens"] < 400


def test_a_page_that_goes_away_mid_reply_keeps_the_text(engine, chat_engine, conversation) -> None:
    message_id, chunks = _reply(engine, chat_engine, conversation)
    seen = [next(chunks) for _ in range(6)]
    chunks.close()  # what a Streamlit rerun (the Stop button, a closed tab) does to the generator
    row = _row(engine, message_id)
    assert row.status == MessageStatus.PARTIAL and row.text == "".join(seen)
    assert chat_engine.gate.waiting == 0  # the model is free again
    _, again = _reply(engine, chat_engine, conversation)
    assert "".join(again)  # and serves the next request


def test_a_failure_is_recorded_on_the_row(engine, chat_engine, conversation) -> None:
    too_long = SamplerSettings(temperature=0, max_new_tokens=4096)  # beyond the context
    conversations.save_sampler(engine, LOCAL_USER, conversation, too_long)
    message_id, chunks = _reply(engine, chat_engine, conversation)
    with pytest.raises(ContextOverflow, match="the model's context holds"):
        list(chunks)
    row = _row(engine, message_id)
    # Stored as a code, read in each viewer's language, saying what to shorten: here the reply length.
    reason = turns.error_of(row.error)
    assert row.status == MessageStatus.ERROR and reason.key == "chat.error.character_too_long"
    assert "模型的上下文上限" in reason.render("zh") and "调低最长回复" in reason.render("zh")
    assert "the model's context holds" in reason.render("en")


def test_an_unfinished_reply_continues_from_its_last_word(engine, chat_engine, conversation) -> None:
    stop = threading.Event()
    message_id, chunks = _reply(engine, chat_engine, conversation, stop)
    for i, _chunk in enumerate(chunks):
        if i == 9:
            stop.set()
    cut = _row(engine, message_id)
    assert cut.status == MessageStatus.PARTIAL and cut.text
    conversations.save_sampler(engine, LOCAL_USER, conversation, SamplerSettings(temperature=0, max_new_tokens=30))
    more = turns.reply(engine, LOCAL_USER, chat_engine, conversation, continue_turn=cut.turn)
    assert more.so_far == cut.text
    added = "".join(more)
    row = _row(engine, message_id)  # the same message, not a new one or an alternative
    assert row.text == cut.text + added and added
    assert row.status == (MessageStatus.COMPLETE if row.stats["finish"] == "stop" else MessageStatus.PARTIAL)
    assert [b.text for b in turns.story(engine, LOCAL_USER, conversation)][-1] == row.text
