"""Conversations, their messages (with alternative replies) and chat attachments.

A conversation is the chosen message of each turn, in turn order. Regenerate adds a new variant
for the same turn and makes it the chosen one; the older ones stay, to page back to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import defer
from sqlmodel import Session, col, delete, func, select, update

from storage import images as images_
from storage.db import require, touch
from storage.tables import (
    LOCAL_USER_ID,
    Attachment,
    Character,
    Conversation,
    ImageData,
    Message,
    MessageStatus,
    Role,
    SheetImage,
    utcnow,
)


class ConversationGone(LookupError):
    """The conversation was deleted (perhaps in another tab) while we were using it."""


def create_conversation(
    session: Session,
    character_id: int,
    title: str = "",
    settings: dict[str, Any] | None = None,
    owner_id: int = LOCAL_USER_ID,
) -> Conversation:
    conversation = Conversation(
        character_id=character_id, title=title, settings=dict(settings or {}), owner_id=owner_id
    )
    session.add(conversation)
    session.flush()
    return conversation


def get_conversation(session: Session, conversation_id: int) -> Conversation | None:
    return session.get(Conversation, conversation_id)


def list_conversations(
    session: Session, character_id: int | None = None, limit: int | None = None, where: Any = None, light: bool = False
) -> list[Conversation]:
    """Most recently active first: those `where` admits (the caller's access rule; None: all). `light`
    rows leave out `chat_metadata` (an imported chat's settings, megabytes at times) for a list."""
    stmt = select(Conversation).order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc())
    if light:
        stmt = stmt.options(defer(Conversation.chat_metadata))
    if character_id is not None:
        stmt = stmt.where(Conversation.character_id == character_id)
    if where is not None:
        stmt = stmt.where(where)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.exec(stmt).all())


@dataclass(frozen=True)
class RecentConversation:
    """A conversation as a "continue where you left off" row shows it: no messages, no full images."""

    id: int
    title: str
    updated_at: datetime
    character_id: int
    character_name: str
    thumbnail: bytes | None = field(repr=False)


def recent_conversations(session: Session, limit: int = 8, where: Any = None) -> list[RecentConversation]:
    """The most recently active conversations `where` admits (all with None), with their character's
    name and main thumbnail."""
    thumb = (
        select(SheetImage.thumbnail)
        .where(SheetImage.character_id == Conversation.character_id, SheetImage.position == 0)
        .correlate(Conversation)
        .scalar_subquery()
    )
    stmt = (
        select(Conversation.id, Conversation.title, Conversation.updated_at, Character.id, Character.name, thumb)
        .join(Character, col(Character.id) == Conversation.character_id)
        .order_by(col(Conversation.updated_at).desc(), col(Conversation.id).desc())
        .limit(limit)
    )
    if where is not None:
        stmt = stmt.where(where)
    return [RecentConversation(*row) for row in session.exec(stmt).all()]


def rename_conversation(session: Session, conversation_id: int, title: str) -> Conversation:
    conversation = _require(session, conversation_id)
    conversation.title = title.strip()
    session.add(conversation)
    session.flush()
    return conversation


def save_settings(session: Session, conversation_id: int, settings: dict[str, Any]) -> Conversation:
    conversation = _require(session, conversation_id)
    conversation.settings = dict(settings)
    session.add(conversation)
    session.flush()
    return conversation


def delete_conversation(session: Session, conversation_id: int) -> None:
    """Delete a conversation; the database cascades to its messages and attachments."""
    session.exec(delete(Conversation).where(col(Conversation.id) == conversation_id))
    session.expunge_all()


def append_message(
    session: Session,
    conversation_id: int,
    role: Role | str,
    text: str,
    attachment_ids: Sequence[int] = (),
    status: MessageStatus | str = MessageStatus.COMPLETE,
) -> Message:
    """Add a message as the next turn. Safe when several writers append at once.

    The conversation row is locked first, so the next turn number is computed by one writer at a time.
    """
    _require(session, conversation_id, lock=True)
    last = session.exec(select(func.max(Message.turn)).where(Message.conversation_id == conversation_id)).one()
    message = Message(
        conversation_id=conversation_id,
        turn=0 if last is None else last + 1,
        role=str(role),
        text=text,
        attachment_ids=list(attachment_ids),
        status=str(status),
    )
    session.add(message)
    _touch(session, conversation_id)
    session.flush()
    return message


def latest_message(session: Session, conversation_id: int) -> Message | None:
    """The chosen message of the last turn: what a page showed last, to tell whether it moved on."""
    stmt = (
        select(Message)
        .where(Message.conversation_id == conversation_id, col(Message.chosen).is_(True))
        .order_by(col(Message.turn).desc())
        .limit(1)
    )
    return session.exec(stmt).first()


def writing_before(session: Session, conversation_id: int, turn: int, since: datetime) -> bool:
    """Whether a reply at an earlier turn is being written (its claim renewed since `since`)."""
    stmt = select(Message.id).where(
        Message.conversation_id == conversation_id,
        Message.turn < turn,
        Message.status == MessageStatus.WRITING,
        Message.updated_at >= since,
    )
    return session.exec(stmt.limit(1)).first() is not None


def insert_conversation(session: Session, conversation: Conversation, messages: Sequence[Message]) -> Conversation:
    """A whole conversation at once, messages with their turns, variants and times already set (an
    imported chat): one flush, in the caller's transaction."""
    session.add(conversation)
    session.flush()
    for message in messages:
        message.conversation_id = conversation.id
    session.add_all(messages)
    session.flush()
    return conversation


def all_messages(session: Session, conversation_id: int) -> list[Message]:
    """Every message with every alternative, in turn and variant order (what an export writes)."""
    stmt = select(Message).where(Message.conversation_id == conversation_id).order_by(Message.turn, Message.variant)
    return list(session.exec(stmt).all())


def add_variant(
    session: Session, conversation_id: int, turn: int, text: str = "", status: MessageStatus | str = "partial"
) -> Message:
    """A new alternative reply for `turn`, chosen from now on."""
    _require(session, conversation_id, lock=True)
    existing = variants(session, conversation_id, turn)
    if not existing:
        raise LookupError(f"Turn {turn} does not exist in conversation {conversation_id}.")
    session.exec(
        update(Message).where(Message.conversation_id == conversation_id, Message.turn == turn).values(chosen=False)
    )
    message = Message(
        conversation_id=conversation_id,
        turn=turn,
        variant=max(m.variant for m in existing) + 1,
        role=existing[0].role,
        text=text,
        status=str(status),
        hidden=existing[0].hidden,  # a turn is hidden from the model or not, whichever alternative is shown
    )
    session.add(message)
    _touch(session, conversation_id)
    session.flush()
    session.expire_all()
    return message


def choose_variant(session: Session, conversation_id: int, turn: int, variant: int) -> Message:
    """Make one alternative the chosen reply for its turn."""
    rows = variants(session, conversation_id, turn)
    target = next((m for m in rows if m.variant == variant), None)
    if target is None:
        raise LookupError(f"Turn {turn} has no variant {variant}.")
    for m in rows:
        m.chosen = m.variant == variant
        session.add(m)
    _touch(session, conversation_id)
    session.flush()
    return target


def set_hidden(session: Session, conversation_id: int, turn: int, hidden: bool) -> bool:
    """Hide a turn (every alternative) from the model, or show it again; False if the turn is not there."""
    rows = variants(session, conversation_id, turn)
    for m in rows:
        m.hidden = hidden
        session.add(m)
    if rows:
        _touch(session, conversation_id)
    session.flush()
    return bool(rows)


def speakers(session: Session, conversation_id: int) -> list[str]:
    """The names an imported chat gives the lines of the character's side (not the user's, not the
    narrator's), in the order they first speak."""
    stmt = (
        select(Message.speaker, func.min(Message.turn))
        .where(Message.conversation_id == conversation_id, Message.role == Role.ASSISTANT, Message.speaker != "")
        .group_by(Message.speaker)
        .order_by(func.min(Message.turn))
    )
    return [name for name, _ in session.exec(stmt).all()]


def variants(session: Session, conversation_id: int, turn: int) -> list[Message]:
    stmt = (
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.turn == turn)
        .order_by(Message.variant)
    )
    return list(session.exec(stmt).all())


def variant_counts(session: Session, conversation_id: int, from_turn: int = 0) -> dict[int, int]:
    """How many alternatives each turn from `from_turn` on has (for the ‹ 2/3 › pager)."""
    stmt = (
        select(Message.turn, func.count(Message.id))
        .where(Message.conversation_id == conversation_id, Message.turn >= from_turn)
        .group_by(Message.turn)
    )
    return {turn: count for turn, count in session.exec(stmt).all()}


def update_message(session: Session, message_id: int, **changes: Any) -> Message:
    """Change a message's text/status/error/stats (used while a reply streams in)."""
    message = session.get(Message, message_id)
    if message is None:
        raise ConversationGone(f"Message {message_id} no longer exists.")
    allowed = {"text", "status", "error", "stats", "attachment_ids"}
    if set(changes) - allowed:
        raise TypeError(f"cannot change {sorted(set(changes) - allowed)}")
    for key, value in changes.items():
        setattr(message, key, str(value) if key == "status" else value)
    message.updated_at = utcnow()
    session.add(message)
    session.flush()
    return message


def get_message(session: Session, message_id: int) -> Message | None:
    return session.get(Message, message_id)


def list_messages(session: Session, conversation_id: int, last: int | None = None) -> list[Message]:
    """The story: the chosen message of each turn, in order; with `last`, only the latest ones
    (read backwards along the (conversation, turn) index, so a long story costs no more)."""
    stmt = select(Message).where(Message.conversation_id == conversation_id, col(Message.chosen).is_(True))
    if last is None:
        return list(session.exec(stmt.order_by(Message.turn)).all())
    return list(reversed(session.exec(stmt.order_by(col(Message.turn).desc()).limit(last)).all()))


def next_turn(session: Session, conversation_id: int, turn: int) -> Message | None:
    """The chosen message of the first turn after `turn`, if there is one."""
    stmt = (
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.turn > turn, col(Message.chosen).is_(True))
        .order_by(Message.turn)
        .limit(1)
    )
    return session.exec(stmt).first()


def delete_chosen(session: Session, conversation_id: int, turn: int) -> bool:
    """Delete the turn's chosen alternative; the one before it (else after it) is chosen instead, and
    a turn without alternatives goes whole. False if the turn was not there."""
    rows = variants(session, conversation_id, turn)
    chosen = next((m for m in rows if m.chosen), rows[-1] if rows else None)
    if chosen is None:
        return False
    _delete(session, rows, chosen)
    return True


def delete_message(session: Session, message_id: int) -> bool:
    """Delete one alternative by its id (a reply that came to nothing); if it was the one shown, its
    neighbour is shown instead. False if it was not there."""
    message = session.get(Message, message_id)
    if message is None:
        return False
    _delete(session, variants(session, message.conversation_id, message.turn), message)
    return True


def _delete(session: Session, rows: list[Message], target: Message) -> None:
    """Delete `target`, one of a turn's alternatives `rows`; the one before it (else after it) is
    chosen instead when it was chosen."""
    rest = [m for m in rows if m.id != target.id]
    was_chosen, conversation_id = target.chosen, target.conversation_id
    session.delete(target)
    session.flush()
    if rest and was_chosen:
        earlier = [m for m in rest if m.variant < target.variant]
        (earlier[-1] if earlier else rest[0]).chosen = True
    _touch(session, conversation_id)
    session.flush()
    session.expire_all()


def delete_after(session: Session, conversation_id: int, turn: int) -> None:
    """Delete every turn after `turn` (edit-and-resend replaces the rest of the story)."""
    session.exec(delete(Message).where(Message.conversation_id == conversation_id, Message.turn > turn))
    _touch(session, conversation_id)
    session.flush()
    session.expire_all()


def add_attachment(session: Session, conversation_id: int, image: ImageData) -> Attachment:
    return images_.store(session, Attachment, [image], conversation_id=conversation_id)[0]


def get_attachments(session: Session, message: Message) -> list[Attachment]:
    """The message's attachments in its order (missing ones, and any of another conversation, skipped)."""
    if not message.attachment_ids:
        return []
    stmt = select(Attachment).where(
        col(Attachment.id).in_(message.attachment_ids), Attachment.conversation_id == message.conversation_id
    )
    rows = {a.id: a for a in session.exec(stmt).all()}
    return [rows[i] for i in message.attachment_ids if i in rows]


def attachment_pictures(session: Session, message: Message) -> list[images_.Stored[Attachment]]:
    """The message's attachments with their full pictures, in order: what the model sees."""
    return images_.with_data(session, Attachment, get_attachments(session, message))


def _require(session: Session, conversation_id: int, lock: bool = False) -> Conversation:
    gone = ConversationGone(f"Conversation {conversation_id} no longer exists.")
    return require(session, Conversation, conversation_id, gone, lock)


def _touch(session: Session, conversation_id: int) -> None:
    touch(session, Conversation, conversation_id)
