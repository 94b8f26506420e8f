"""The one place where a service fetches a character or conversation on behalf of an actor.

Every read and write of the services starts here, so "may this actor see or change it?" is
answered once. A row that is missing (deleted in another tab) and a row the actor may not see
answer the same `NotFound`, so an id reveals nothing. (Single-user mode: every row is the local
user's; per-user rules arrive with teams, here and nowhere else.)
"""

from __future__ import annotations

from sqlmodel import Session

from core.errors import NotFound
from core.users import Actor
from storage import characters as chars
from storage import conversations as convs
from storage.tables import Character, Conversation, SheetImage


def character(session: Session, actor: Actor, character_id: int | None, *, write: bool = False) -> Character:
    """The character, or `NotFound`. `write`: the actor means to change or delete it."""
    row = chars.get_character(session, character_id) if character_id is not None else None
    if row is None:
        raise NotFound("character", id=character_id)
    return row


def conversation(session: Session, actor: Actor, conversation_id: int | None, *, write: bool = False) -> Conversation:
    """The conversation, or `NotFound`. Conversations are private to whoever holds them."""
    row = convs.get_conversation(session, conversation_id) if conversation_id is not None else None
    if row is None:
        raise NotFound("conversation", id=conversation_id)
    character(session, actor, row.character_id)
    return row


def sheet(session: Session, actor: Actor, character_id: int, image_id: int, *, write: bool = False) -> SheetImage:
    """One of the character's reference images (never another character's)."""
    character(session, actor, character_id, write=write)
    image = session.get(SheetImage, image_id)
    if image is None or image.character_id != character_id:
        raise NotFound("image", id=image_id)
    return image
