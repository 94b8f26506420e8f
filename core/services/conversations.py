"""Conversations: what pages call to list, start (with the greeting), rename, delete, tune, export and
import them.

A new conversation opens with the character's saved greeting (its alternate greetings as
alternatives to page through); without one the character greets from its sheet, which is a
reply like any other (`core.services.turns.reply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.base.errors import Refused
from core.base.sampling import InvalidSampler, SamplerSettings
from core.base.text import one_line
from core.formats import chat_files
from core.formats.chat_files import Chat, ChatMessage, Said
from core.model.backend import Backend, ReplyRequest
from core.model.prompts import fill_placeholders
from core.services import access
from core.services.characters import character_prefix
from core.services.users import Actor
from storage import conversations as convs
from storage.conversations import RecentConversation
from storage.tables import Conversation, Message, MessageStatus, Role


def for_character(db: Engine, actor: Actor, character_id: int) -> list[Conversation]:
    """The actor's conversations with a character, most recently active first."""
    with Session(db) as session:
        access.character(session, actor, character_id)
        return convs.list_conversations(session, character_id, where=access.conversations_seen(actor))


def recent(db: Engine, actor: Actor, limit: int = 8) -> list[RecentConversation]:
    """Where the actor left off, across characters."""
    with Session(db) as session:
        return convs.recent_conversations(session, limit, where=access.conversations_seen(actor))


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
        convs.rename_conversation(session, conversation_id, one_line(title)[:200])


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
            prefix = character_prefix(session, character, actor)
            taken = backend.count_tokens(ReplyRequest(prefix, (), settings))
            if settings.max_new_tokens > limit - taken:
                raise Refused("reply_too_long", most=max(limit - taken, 0), limit=limit, character=taken)
        convs.save_settings(session, conversation_id, settings.to_dict())


# -- chats as files (formats in `core.formats.chat_files`) --------------------------------------------------
def _as_chat(db: Engine, actor: Actor, conversation_id: int) -> Chat:
    """The conversation with every alternative, as the file formats see it. Empty failed replies
    (nothing came back) are left out."""
    with Session(db) as session:
        conversation = access.conversation(session, actor, conversation_id)
        character = access.character(session, actor, conversation.character_id)
        turns: dict[int, list[Message]] = {}
        for m in convs.all_messages(session, conversation_id):
            if m.text or m.status != MessageStatus.ERROR:
                turns.setdefault(m.turn, []).append(m)
        messages = tuple(
            ChatMessage(
                is_user=rows[0].role == Role.USER,
                alternatives=tuple(_said(m) for m in rows),
                chosen=next((i for i, m in enumerate(rows) if m.chosen), len(rows) - 1),
            )
            for rows in turns.values()
        )
        return Chat(actor.user_name, character.name, conversation.created_at, conversation.title, messages)


def _said(m: Message) -> Said:
    generated = m.updated_at if m.stats else None  # a reply the model wrote (not a greeting or an import)
    return Said(m.text, m.created_at, generated, len(m.attachment_ids))


def export_markdown(db: Engine, actor: Actor, conversation_id: int, lang: str = "en") -> str:
    """The conversation as Markdown to read or print (attached pictures noted as "[image]")."""
    return chat_files.to_markdown(_as_chat(db, actor, conversation_id), lang)


def export_jsonl(db: Engine, actor: Actor, conversation_id: int) -> bytes:
    """The conversation as a SillyTavern chat file, alternatives as swipes (pictures are not carried)."""
    return chat_files.to_jsonl(_as_chat(db, actor, conversation_id))


@dataclass(frozen=True)
class ImportedChat:
    conversation: Conversation
    messages: int
    skipped_system: int  # SillyTavern system notes, left out


def import_jsonl(db: Engine, actor: Actor, character_id: int, raw: bytes, name: str) -> ImportedChat:
    """A SillyTavern chat file as a new conversation of the actor's with a character they may chat
    with: messages in order, swipes as alternatives, {{char}}/{{user}} filled as in a greeting.
    Stored whole or not at all; a file that is not a chat is refused before anything is written."""
    chat = chat_files.read_jsonl(raw, name)
    now = datetime.now(UTC)
    with access.writing(db) as session:
        character = access.character(session, actor, character_id)
        char_name, user = character.name or "you", actor.user_name
        title = chat.title or name.removesuffix(".jsonl")
        conversation = Conversation(
            character_id=character.id,
            owner_id=actor.id,
            title=one_line(title)[:200],
            created_at=chat.created_at,
            updated_at=now,
        )
        rows = [
            Message(
                turn=turn,
                variant=variant,
                chosen=variant == message.chosen,
                role=Role.USER if message.is_user else Role.ASSISTANT,
                text=fill_placeholders(said.text, char_name, user),
                status=MessageStatus.COMPLETE,
                created_at=said.at,
                updated_at=said.at,
            )
            for turn, message in enumerate(chat.messages)
            for variant, said in enumerate(message.alternatives)
        ]
        convs.insert_conversation(session, conversation, rows)
        return ImportedChat(conversation, len(chat.messages), chat.skipped_system)
