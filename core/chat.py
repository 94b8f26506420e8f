"""One chat turn end to end, in plain Python: storage → prompt → stream → storage.

The page calls these in a straight line. The user's message is committed before anything is
generated; the reply row exists (status "partial") before the first token and is saved as it
streams, so a stop, a failure or a dead server leaves what was written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.generation import ContextOverflow, ReplyRequest
from core.lore import Lorebook
from core.prompts import CharacterPrompt, Profile, PromptImage, Turn, character_prompt, fill_placeholders
from core.sampling import InvalidSampler, SamplerSettings
from core.streaming import GenerationStats, ReplyStream
from storage import characters as chars
from storage import conversations as convs
from storage.db import session_scope
from storage.tables import Character, Conversation, MessageStatus, Role

FLUSH_SECONDS = 1.0
FLUSH_CHUNKS = 16
TITLE_LENGTH = 48


def character_prefix(session: Session, character: Character) -> CharacterPrompt:
    """The character instruction with every reference image, main sheet first, and its character book."""
    sheets = [PromptImage(s.sha256, s.data) for s in chars.get_images(session, character.id)]
    return character_prompt(Profile.of(character), sheets, Lorebook.from_card(character.character_book))


def history(session: Session, conversation_id: int, before_turn: int | None = None) -> tuple[Turn, ...]:
    """The story so far (chosen messages), with attached images, up to `before_turn` (exclusive)."""
    turns = []
    for m in convs.list_messages(session, conversation_id):
        if before_turn is not None and m.turn >= before_turn:
            break
        if m.status == MessageStatus.ERROR and not m.text:
            continue
        images = tuple(PromptImage(a.sha256, a.data) for a in convs.get_attachments(session, m.attachment_ids))
        turns.append(Turn(m.role, m.text, images))
    return tuple(turns)


def sampler_of(conversation: Conversation) -> SamplerSettings:
    """The conversation's saved sampler settings (defaults if none or if they no longer validate)."""
    try:
        return SamplerSettings.from_dict(conversation.settings)
    except InvalidSampler:
        return SamplerSettings()


def conversation_key(conversation_id: int) -> str:
    return f"conversation:{conversation_id}"


def build_request(session: Session, conversation_id: int, before_turn: int | None = None) -> ReplyRequest:
    conversation = convs.get_conversation(session, conversation_id)
    if conversation is None:
        raise convs.ConversationGone(f"Conversation {conversation_id} no longer exists.")
    character = chars.get_character(session, conversation.character_id)
    return ReplyRequest(
        prefix=character_prefix(session, character),
        history=history(session, conversation_id, before_turn),
        sampler=sampler_of(conversation),
        conversation_key=conversation_key(conversation_id),
    )


def open_conversation(session: Session, character: Character, title: str = "") -> tuple[Conversation, bool]:
    """A new conversation. Returns it and whether a greeting must still be generated.

    A saved greeting (and the card's alternate greetings, as alternatives to page through) is
    written at once; without one the model greets from the sheet.
    """
    conversation = convs.create_conversation(session, character.id, title)
    greetings = [g for g in [character.first_mes, *character.alternate_greetings] if g and g.strip()]
    if not greetings:
        return conversation, True
    name = character.name or "you"
    first = convs.append_message(session, conversation.id, Role.ASSISTANT, fill_placeholders(greetings[0], name))
    for extra in greetings[1:]:
        convs.add_variant(session, conversation.id, first.turn, fill_placeholders(extra, name), MessageStatus.COMPLETE)
    if len(greetings) > 1:
        convs.choose_variant(session, conversation.id, first.turn, 0)
    return conversation, False


def add_user_message(
    session: Session, conversation_id: int, text: str, attachments: list[Any] | tuple[Any, ...] = ()
) -> int:
    """Store the user's message (and its prepared images); returns its turn."""
    ids = [convs.add_attachment(session, conversation_id, image).id for image in attachments]
    message = convs.append_message(session, conversation_id, Role.USER, text, attachment_ids=ids)
    conversation = convs.get_conversation(session, conversation_id)
    if conversation is not None and not conversation.title and text.strip():
        first_line = text.strip().splitlines()[0]
        title = first_line if len(first_line) <= TITLE_LENGTH else first_line[: TITLE_LENGTH - 1] + "…"
        convs.rename_conversation(session, conversation_id, title)
    return message.turn


def start_reply(db: Engine, conversation_id: int, regenerate_turn: int | None = None) -> tuple[int, int]:
    """Create the reply row before generating: a new turn, or a new alternative of `regenerate_turn`.

    Returns (message id, turn). The row starts "partial" so a crash mid-stream reads as unfinished.
    """
    with session_scope(db) as session:
        if regenerate_turn is None:
            message = convs.append_message(session, conversation_id, Role.ASSISTANT, "", status=MessageStatus.PARTIAL)
        else:
            message = convs.add_variant(session, conversation_id, regenerate_turn, "", MessageStatus.PARTIAL)
        return message.id, message.turn


def stream_into(db: Engine, message_id: int, stream: ReplyStream, lang: str = "en") -> Iterator[str]:
    """Yield the reply's chunks while saving them to the message row as they come.

    Saved every FLUSH_SECONDS or FLUSH_CHUNKS chunks; at the end the row is complete, or partial
    (stopped, abandoned) or error (failed), always with the text so far and the stats.
    """
    text: list[str] = []
    last_flush, pending = time.monotonic(), 0
    outcome, error = MessageStatus.PARTIAL, ""
    try:
        for chunk in stream:
            text.append(chunk)
            pending += 1
            yield chunk
            if pending >= FLUSH_CHUNKS or time.monotonic() - last_flush >= FLUSH_SECONDS:
                _save(db, message_id, "".join(text), MessageStatus.PARTIAL, "", stream.stats)
                last_flush, pending = time.monotonic(), 0
        outcome = MessageStatus.PARTIAL if stream.stats.stopped else MessageStatus.COMPLETE
    except GeneratorExit:  # the page went away mid-reply (Stop, a rerun): keep what was said
        outcome = MessageStatus.PARTIAL
        raise
    except Exception as exc:
        outcome = MessageStatus.PARTIAL if text else MessageStatus.ERROR
        # Our own errors say what to do in the user's language; anything else is stored as it came.
        error = exc.message(lang) if isinstance(exc, ContextOverflow) else str(exc) or type(exc).__name__
        raise
    finally:
        stream.close()
        stats = stream.stats
        if outcome == MessageStatus.PARTIAL and not error:
            stats.stopped = True
        _save(db, message_id, "".join(text), outcome, error, stats)


def _save(db: Engine, message_id: int, text: str, status: str, error: str, stats: GenerationStats) -> None:
    try:
        with session_scope(db) as session:
            convs.update_message(session, message_id, text=text, status=status, error=error, stats=stats.to_dict())
    except convs.ConversationGone:
        pass  # deleted in another tab while it streamed: nothing left to save into
