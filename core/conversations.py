"""Conversations: what pages call to list, start (with the greeting), rename, delete and tune them.

A new conversation opens with the character's saved greeting (its alternate greetings as
alternatives to page through); without one the character greets from its sheet, which is a
reply like any other (`core.turns.reply`).
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core import access
from core.backend import Backend, ReplyRequest
from core.characters import character_prefix
from core.errors import Refused
from core.prompts import fill_placeholders
from core.sampling import InvalidSampler, SamplerSettings
from core.text import clean_text
from core.users import Actor
from storage import conversations as convs
from storage.conversations import RecentConversation
from storage.tables import Conversation, MessageStatus, Role


def for_character(db: Engine, actor: Actor, character_id: int) -> list[Conversation]:
    """The actor's conversations with a character, most recently active first."""
    with Session(db) as session:
        access.character(session, actor, character_id)
        return convs.list_conversations(session, character_id, owner_id=actor.id)


def recent(db: Engine, actor: Actor, limit: int = 8) -> list[RecentConversation]:
    """Where the actor left off, across characters."""
    with Session(db) as session:
        return convs.recent_conversations(session, limit, owner_id=actor.id)


def get(db: Engine, actor: Actor, conversation_id: int | None) -> Conversation:
    with Session(db) as session:
        return access.conversation(session, actor, conversation_id)


def start(db: Engine, actor: Actor, character_id: int, title: str = "") -> Conversation:
    """A new conversation, with the saved greeting already in it if the character has one."""
    with access.writing(db) as session:
        character = access.character(session, actor, character_id)
        conversation = convs.create_conversation(session, character.id, title, owner_id=actor.id)
        greetings = [g for g in [character.first_mes, *character.alternate_greetings] if g and g.strip()]
        if not greetings:
            return conversation
        name, user = character.name or "you", actor.user_name
        first = convs.append_message(
            session, conversation.id, Role.ASSISTANT, fill_placeholders(greetings[0], name, user)
        )
        for extra in greetings[1:]:
            text = fill_placeholders(extra, name, user)
            convs.add_variant(session, conversation.id, first.turn, text, MessageStatus.COMPLETE)
        if len(greetings) > 1:
            convs.choose_variant(session, conversation.id, first.turn, 0)
        return conversation


def rename(db: Engine, actor: Actor, conversation_id: int, title: str) -> None:
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        convs.rename_conversation(session, conversation_id, clean_text(title)[:200])


def delete(db: Engine, actor: Actor, conversation_id: int) -> None:
    """Delete the conversation with its messages and attachments."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        convs.delete_conversation(session, conversation_id)


def sampler(conversation: Conversation) -> SamplerSettings:
    """The conversation's saved reply settings (defaults if none or if they no longer validate)."""
    try:
        return SamplerSettings.from_dict(conversation.settings)
    except InvalidSampler:
        return SamplerSettings()


def save_sampler(
    db: Engine, actor: Actor, conversation_id: int, settings: SamplerSettings, backend: Backend | None = None
) -> None:
    """Save the reply settings. With a backend that knows its context, a longest reply that leaves no
    room for this character is refused (it would make every reply fail), saying how long one can be."""
    with access.writing(db) as session:
        conversation = access.conversation(session, actor, conversation_id, write=True)
        if backend is not None and (limit := backend.context_limit()) is not None:
            character = access.character(session, actor, conversation.character_id)
            prefix = character_prefix(session, character, actor.user_name)
            taken = backend.count_tokens(ReplyRequest(prefix, (), settings))
            if settings.max_new_tokens > limit - taken:
                raise Refused("reply_too_long", most=max(limit - taken, 0), limit=limit, character=taken)
        convs.save_settings(session, conversation_id, settings.to_dict())
