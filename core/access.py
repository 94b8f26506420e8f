"""The one place where a service fetches a character or conversation on behalf of an actor.

Every read and write of the services starts here, so "may this actor see or change it?" is answered
once:
- a character is seen by its owner, by everyone when shared, and by admins; it is changed only by its
  owner and deleted by its owner or an admin;
- a conversation is seen and changed by its owner alone, admins included.
A row the actor may not see answers the same `NotFound` as a missing one, so an id in a deep link or
a form reveals nothing. A row the actor sees but may not change is `Refused`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.errors import NotFound, Refused, StorageFull

if TYPE_CHECKING:
    from core.users import Actor  # users write through `writing` below
from storage import characters as chars
from storage import conversations as convs
from storage import db as storage_db
from storage.tables import Character, Conversation, SheetImage


def character(
    session: Session, actor: Actor, character_id: int | None, *, write: bool = False, delete: bool = False
) -> Character:
    """The character, or `NotFound`; `write`: the actor means to change it; `delete`: to delete it."""
    row = chars.get_character(session, character_id) if character_id is not None else None
    mine = row is not None and row.owner_id == actor.id
    if row is None or not (mine or row.shared or actor.is_admin):
        raise NotFound("character", id=character_id)
    if (write and not mine) or (delete and not (mine or actor.is_admin)):
        raise Refused("not_yours", name=row.name)
    return row


def conversation(session: Session, actor: Actor, conversation_id: int | None, *, write: bool = False) -> Conversation:
    """The actor's own conversation, or `NotFound` (its character must still be one they may see)."""
    row = convs.get_conversation(session, conversation_id) if conversation_id is not None else None
    if row is None or row.owner_id != actor.id:
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


@contextmanager
def writing(db: Engine) -> Iterator[Session]:
    """The services' one way to write: a unit of work stored whole or not at all, and a full disk said
    as such (in the reader's language) instead of a database error."""
    try:
        with storage_db.session_scope(db) as session:
            yield session
    except storage_db.StorageFull as exc:
        raise StorageFull() from exc
