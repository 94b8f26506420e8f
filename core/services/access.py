"""The access rule, written once: who sees, changes and deletes which character and conversation.

- A character is **seen** by its owner and, while it is shared, by everyone signed in. Seeing it is
  what Chat, its pictures, exports, copies, the picker, Home's *Recent* and backups need.
- It is **changed** by its owner alone, and **deleted** by its owner or an admin. To find what they
  may delete, admins also **list** every character in the Library (name, thumbnail, a line of notes):
  listing is not seeing, so an admin cannot open someone else's private character, chat with it,
  export it or copy it.
- A conversation is seen and changed by its owner alone (admins included), and only while its
  character is one they see: un-sharing a character hides the conversations others had with it.

The rule is two SQL predicates, `characters_seen` and `conversations_seen`; every list filters with
them and every single-row check below asks the database through them, so a list cannot drift from a
deep link. A row the actor may not see answers the same `NotFound` as a missing one, so an id in a
deep link or a form reveals nothing. A row the actor sees but may not change is `Refused`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, true
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from core.base.errors import NotFound, Refused, StorageFull
from storage import db as storage_db
from storage.tables import LOCAL_USER_ID, Character, Conversation, SheetImage


@dataclass(frozen=True)
class Persona:
    """Who the user is to the characters: the name they call them by, and what they know of them."""

    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class Actor:
    """The person on whose behalf a service runs (every service takes one). `id` is what rows record
    as their owner; `is_admin` comes only from a verified address (`core.services.users`)."""

    id: int
    display_name: str = ""  # the provider's name for them
    email: str = ""  # verified, or empty
    is_admin: bool = False
    persona: Persona = field(default_factory=Persona)
    ui_language: str = ""  # the interface language they chose ("": none yet)

    @property
    def user_name(self) -> str:
        """Who the characters talk to ({{user}} in cards and greetings): the persona's name, else the
        provider's, else "you"."""
        return self.persona.name.strip() or self.display_name.strip() or "you"


LOCAL_USER = Actor(id=LOCAL_USER_ID, is_admin=True)  # the one user of an install without sign-in


def characters_seen(actor: Actor, table: Any = Character) -> ColumnElement[bool]:
    """The characters the actor sees: their own and the shared ones (`table`: an alias of `Character`)."""
    return or_(col(table.owner_id) == actor.id, col(table.shared).is_(True))


def characters_owned(actor: Actor) -> ColumnElement[bool]:
    """The actor's own characters: what their backup carries whole."""
    return col(Character.owner_id) == actor.id


def characters_listed(actor: Actor) -> ColumnElement[bool]:
    """The Library's cards: what the actor sees, and for an admin every character (to moderate)."""
    return true() if actor.is_admin else characters_seen(actor)


def conversations_seen(actor: Actor) -> ColumnElement[bool]:
    """The actor's own conversations with characters they (still) see."""
    character = aliased(Character)  # its own name: never correlated with a query's `character`
    seen = select(character.id).where(characters_seen(actor, character))
    return and_(col(Conversation.owner_id) == actor.id, col(Conversation.character_id).in_(seen))


def character(
    session: Session, actor: Actor, character_id: int | None, *, write: bool = False, delete: bool = False
) -> Character:
    """The character, or `NotFound`; `write`: the actor means to change it; `delete`: to delete it
    (an admin may delete one they cannot see)."""
    where = characters_listed(actor) if delete else characters_seen(actor)
    row = _one(session, Character, character_id, where)
    if row is None:
        raise NotFound("character", id=character_id)
    mine = row.owner_id == actor.id
    if (write and not mine) or (delete and not (mine or actor.is_admin)):
        raise Refused("not_yours", name=row.name)
    return row


def conversation(session: Session, actor: Actor, conversation_id: int | None, *, write: bool = False) -> Conversation:
    """The actor's own conversation, or `NotFound` (its character must still be one they see)."""
    row = _one(session, Conversation, conversation_id, conversations_seen(actor))
    if row is None:
        raise NotFound("conversation", id=conversation_id)
    return row


def sheet(session: Session, actor: Actor, character_id: int, image_id: int, *, write: bool = False) -> SheetImage:
    """One of the character's reference images (never another character's)."""
    character(session, actor, character_id, write=write)
    image = session.get(SheetImage, image_id)
    if image is None or image.character_id != character_id:
        raise NotFound("image", id=image_id)
    return image


def _one(session: Session, table: Any, row_id: int | None, where: ColumnElement[bool]) -> Any:
    if row_id is None:
        return None
    return session.exec(select(table).where(col(table.id) == row_id, where)).first()


@contextmanager
def writing(db: Engine) -> Iterator[Session]:
    """The services' one way to write: a unit of work stored whole or not at all, and a full disk said
    as such (in the reader's language) instead of a database error."""
    try:
        with storage_db.session_scope(db) as session:
            yield session
    except storage_db.StorageFull as exc:
        raise StorageFull() from exc
