"""Conversations: what pages call to list, start (with the greeting), rename, delete, tune, export and
import them, and to hide a message from the model or show it again.

A new conversation opens with the character's saved greeting (its alternate greetings as
alternatives to page through); without one the character greets from its sheet, which is a
reply like any other (`core.services.turns.reply`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from core.base.errors import NotFound, Refused
from core.base.sampling import SamplerSettings
from core.base.text import one_line
from core.formats import chat_files
from core.formats.chat_files import Chat, ChatMessage, Said
from core.model.backend import Backend, ReplyRequest
from core.services import access
from core.services.access import Actor
from core.services.prompting import character_prefix, names, reply_settings
from storage import conversations as convs
from storage.conversations import RecentConversation
from storage.tables import Conversation, Message, MessageStatus, Role


def for_character(db: Engine, actor: Actor, character_id: int) -> list[Conversation]:
    """The actor's conversations with a character, most recently active first. The list is read on every
    run of the chat page, so its rows leave out the chat settings an imported chat carries (SillyTavern's
    `chat_metadata`, megabytes at times): `author_note` reads them for the one conversation shown."""
    with Session(db) as session:
        access.character(session, actor, character_id)
        rows = convs.list_conversations(session, character_id, where=access.conversations_seen(actor), light=True)
    return rows


def recent(db: Engine, actor: Actor, limit: int = 8) -> list[RecentConversation]:
    """Where the actor left off, across characters."""
    with Session(db) as session:
        return convs.recent_conversations(session, limit, where=access.conversations_seen(actor))


def get(db: Engine, actor: Actor, conversation_id: int | None) -> Conversation:
    with Session(db) as session:
        return access.conversation(session, actor, conversation_id)


def start(db: Engine, actor: Actor, character_id: int, title: str = "") -> Conversation:
    """A new conversation, with the saved greeting already in it if the character has one (stored as
    written: `{{user}}` is filled when it is shown and prompted, see `prompting.names`)."""
    with access.writing(db) as session:
        character = access.character(session, actor, character_id)
        conversation = convs.create_conversation(session, character.id, title, owner_id=actor.id)
        greetings = [g for g in [character.first_mes, *character.alternate_greetings] if g and g.strip()]
        if not greetings:
            return conversation
        first = convs.append_message(session, conversation.id, Role.ASSISTANT, greetings[0])  # macros kept
        for extra in greetings[1:]:
            convs.add_variant(session, conversation.id, first.turn, extra, MessageStatus.COMPLETE)
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
    return reply_settings(conversation)


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


# -- hidden messages, speakers, the author's note ----------------------------------------------------
def set_hidden(db: Engine, actor: Actor, conversation_id: int, turn: int, hidden: bool) -> None:
    """Hide a message (every alternative of its turn) from the model, or show it to the model again.
    A hidden message is kept and shown, but left out of the prompt and of fitting it to the context;
    it is saved, and exported as SillyTavern's `is_system: true`."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        if not convs.set_hidden(session, conversation_id, turn, hidden):
            raise NotFound("message", id=turn)


def speakers(db: Engine, actor: Actor, conversation_id: int) -> list[str]:
    """Who else speaks on the character's side, as an imported group chat names them (the character's
    own lines, decided on import, have no speaker: a rename changes nothing): when there is anyone,
    the conversation came from a group and continues with this one character alone."""
    with Session(db) as session:
        access.conversation(session, actor, conversation_id)
        return convs.speakers(session, conversation_id)


@dataclass(frozen=True)
class AuthorNote:
    """SillyTavern's author's note of an imported chat (`chat_metadata.note_prompt`), shown read-only:
    it is not given to the model here."""

    text: str
    depth: int | None = None  # how many messages from the end SillyTavern inserts it
    interval: int | None = None  # every how many messages


def author_note(db: Engine, actor: Actor, conversation_id: int) -> AuthorNote | None:
    """The imported chat's author's note, if it has one (its chat settings read for this one
    conversation: the list of conversations leaves them out)."""
    with Session(db) as session:
        access.conversation(session, actor, conversation_id)
        meta = session.exec(select(Conversation.chat_metadata).where(Conversation.id == conversation_id)).first()
    meta = meta if isinstance(meta, dict) else {}
    text = meta.get("note_prompt")
    if not isinstance(text, str) or not text.strip():
        return None

    def number(key: str) -> int | None:
        value = meta.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return AuthorNote(text, number("note_depth"), number("note_interval"))


# -- chats as files (formats in `core.formats.chat_files`) --------------------------------------------------
def _as_chat(db: Engine, actor: Actor, conversation_id: int) -> Chat:
    """The conversation with every alternative, as the file formats see it. Empty failed replies
    (nothing came back) are left out."""
    with Session(db) as session:
        conversation = access.conversation(session, actor, conversation_id)
        character = access.character(session, actor, conversation.character_id)
        filled = names(character, actor)
        turns: dict[int, list[Message]] = {}
        for m in convs.all_messages(session, conversation_id):
            if m.text or m.status != MessageStatus.ERROR:
                turns.setdefault(m.turn, []).append(m)
        messages = tuple(_message(rows, filled) for rows in turns.values())
        metadata = dict(conversation.chat_metadata or {})  # a row read whole here
        return Chat(actor.user_name, character.name, conversation.created_at, conversation.title, messages,
                    metadata=metadata)  # fmt: skip


def _message(rows: list[Message], filled: Callable[[str], str]) -> ChatMessage:
    chosen = next((i for i, m in enumerate(rows) if m.chosen), len(rows) - 1)
    shown = rows[chosen]
    return ChatMessage(
        is_user=rows[0].role == Role.USER,
        alternatives=tuple(_said(m, filled) for m in rows),
        chosen=chosen,
        name=str(shown.carried.get("name") or shown.speaker),  # the file's own name, where it was not kept as is
        hidden=shown.hidden,
        narrator=rows[0].role == Role.NARRATOR,
    )


def _said(m: Message, filled: Callable[[str], str]) -> Said:
    generated = m.updated_at if m.stats else None  # a reply the model wrote (not a greeting or an import)
    return Said(filled(m.text), m.created_at, generated, len(m.attachment_ids), dict(m.carried or {}))


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
    hidden: int = 0  # messages kept hidden from the model, as they were in SillyTavern
    narrator: int = 0  # narrator lines (`/sys`)
    speakers: tuple[str, ...] = ()  # others on the character's side (a group chat): it continues with one
    names_cut: int = 0  # speakers' names past MAX_SPEAKER, shown cut (and written back whole)


MAX_SPEAKER = 200  # characters of a speaker's name as shown


def import_jsonl(
    db: Engine, actor: Actor, character_id: int, raw: bytes, name: str, zone: tzinfo = UTC
) -> ImportedChat:
    """A SillyTavern chat file as a new conversation of the actor's with a character they may chat
    with: messages in order, swipes as alternatives, {{char}}/{{user}} kept as macros (as in a greeting),
    hidden messages hidden, narrator lines as the narrator's, each line's speaker, what each line
    carries and the chat's `chat_metadata` kept for the export; a time without a zone is read in the
    importing viewer's `zone` (see `chat_files`). The character's own lines are decided here, once
    (`chat_files.own_line`), and have no speaker: renaming the character later changes nothing. A
    name stored other than as the file says it (the character's own, or one cut to MAX_SPEAKER) is
    carried to be written back. Stored whole or not at all; a file that is not a chat is refused
    before anything is written."""
    chat = chat_files.read_jsonl(raw, name, zone=zone)
    now = datetime.now(UTC)
    with access.writing(db) as session:
        character = access.character(session, actor, character_id)
        speakers = [
            "" if chat_files.own_line(chat, message, character.name) else one_line(message.name)[:MAX_SPEAKER]
            for message in chat.messages
        ]
        title = chat.title or name.removesuffix(".jsonl")
        conversation = Conversation(
            character_id=character.id,
            owner_id=actor.id,
            title=one_line(title)[:200],
            chat_metadata=dict(chat.metadata),
            created_at=chat.created_at,
            updated_at=now,
        )
        rows = [
            Message(
                turn=turn,
                variant=variant,
                chosen=variant == message.chosen,
                role=Role.NARRATOR if message.narrator else Role.USER if message.is_user else Role.ASSISTANT,
                text=said.text,
                status=MessageStatus.COMPLETE,
                hidden=message.hidden,
                speaker=speakers[turn],
                carried={**said.carried, **({"name": message.name} if message.name != speakers[turn] else {})},
                created_at=said.at,
                updated_at=said.at,
            )
            for turn, message in enumerate(chat.messages)
            for variant, said in enumerate(message.alternatives)
        ]
        convs.insert_conversation(session, conversation, rows)
        others = dict.fromkeys(r.speaker for r in rows if r.role == Role.ASSISTANT and r.speaker)
        return ImportedChat(
            conversation,
            len(chat.messages),
            chat.skipped_system,
            hidden=sum(m.hidden for m in chat.messages),
            narrator=sum(m.narrator for m in chat.messages),
            speakers=tuple(others),
            names_cut=sum(
                len(one_line(m.name)) > MAX_SPEAKER for m, name in zip(chat.messages, speakers, strict=True) if name
            ),
        )
