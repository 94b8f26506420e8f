"""Characters and their reference images: small functions that each take a `Session`.

Lists never load full image blobs: those live in their own table (`storage.images`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, type_coerce
from sqlmodel import Session, col, delete, select

from storage import images as images_
from storage.db import require, touch
from storage.tables import LOCAL_USER_ID, Character, CharacterProfile, Conversation, ImageData, SheetImage, User, utcnow

PROFILE_FIELDS: tuple[str, ...] = tuple(CharacterProfile.model_fields)
_TIME = Character.__table__.c.updated_at.type  # a time computed in SQL reads back like the column


class StorageError(ValueError):
    """A request the data cannot honour (e.g. removing a character's only sheet)."""


@dataclass(frozen=True)
class CharacterSummary:
    """What a library card needs: no full images."""

    id: int
    name: str
    language: str
    notes: str
    thumbnail: bytes | None = field(repr=False)
    conversation_count: int  # the viewer's own conversations with it
    last_activity: datetime
    owner_id: int = LOCAL_USER_ID
    owner_name: str = ""
    shared: bool = False


def create_character(
    session: Session, images: Sequence[ImageData], owner_id: int = LOCAL_USER_ID, **profile: Any
) -> Character:
    """Store a character with its images (the first is the main sheet) in the caller's transaction."""
    if not images:
        raise StorageError("A character needs a main reference sheet.")
    unknown = set(profile) - set(PROFILE_FIELDS)
    if unknown:
        raise TypeError(f"unknown character fields: {sorted(unknown)}")
    character = Character(**profile, owner_id=owner_id)
    session.add(character)
    session.flush()
    images_.store(session, SheetImage, images, character_id=character.id, position=0)
    return character


def count_characters(session: Session, where: Any = None, query: str = "", notes_of: Any = None) -> int:
    """How many characters `where` admits (every one with None) that match `query`."""
    return session.exec(matching(select(func.count(Character.id)), where, query, notes_of)).one()


def matching(stmt: Any, where: Any = None, query: str = "", notes_of: Any = None) -> Any:
    """`stmt` narrowed to the characters `where` admits (the caller's access rule; None: all) and
    to what a search finds: the name, or the notes of those `notes_of` admits (all with None). A
    search is plain text: `%` and `_` in it are themselves, not wildcards."""
    if where is not None:
        stmt = stmt.where(where)
    if query.strip():
        pattern = "%" + query.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        notes = col(Character.notes).ilike(pattern, escape="\\")
        if notes_of is not None:
            notes = and_(notes, notes_of)
        stmt = stmt.where(or_(col(Character.name).ilike(pattern, escape="\\"), notes))
    return stmt


def get_character(session: Session, character_id: int) -> Character | None:
    return session.get(Character, character_id)


def update_character(session: Session, character_id: int, **changes: Any) -> Character:
    character = _require(session, character_id)
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise TypeError(f"unknown character fields: {sorted(unknown)}")
    for key, value in changes.items():
        setattr(character, key, value)
    character.updated_at = utcnow()
    session.add(character)
    session.flush()
    return character


def delete_character(session: Session, character_id: int) -> None:
    """Delete a character; the database cascades to its images, conversations and messages."""
    session.exec(delete(Character).where(col(Character.id) == character_id))
    session.expunge_all()


def duplicate_character(
    session: Session, character_id: int, name_suffix: str = " (copy)", owner_id: int | None = None
) -> Character:
    """A new character with the same profile and images, and no conversations (not shared)."""
    source = _require(session, character_id)
    profile = {k: getattr(source, k) for k in PROFILE_FIELDS}
    profile["name"] = f"{source.name}{name_suffix}"
    owner_id = owner_id if owner_id is not None else source.owner_id
    copy = Character(**profile, owner_id=owner_id)
    session.add(copy)
    session.flush()
    originals = get_images(session, character_id)  # rows copied here, their bytes inside the database
    copies = [SheetImage.from_image(image, character_id=copy.id, position=image.position) for image in originals]
    session.add_all(copies)
    session.flush()
    images_.copy_data(session, SheetImage, [(old.id, new.id) for old, new in zip(originals, copies, strict=True)])
    return copy


def set_shared(session: Session, character_id: int, shared: bool) -> Character:
    character = _require(session, character_id)
    character.shared = shared
    session.add(character)
    session.flush()
    return character


def _activity(conversations: Any) -> tuple[Any, Any]:
    """Per character: how many of the conversations `conversations` admits are with it (the viewer's
    own: nobody learns about another's), and the later of their last change and the character's own
    (what "most recent first" sorts by)."""
    mine = [Conversation.character_id == Character.id]
    if conversations is not None:
        mine.append(conversations)
    count = select(func.count(Conversation.id)).where(*mine).correlate(Character).scalar_subquery()
    last = select(func.max(Conversation.updated_at)).where(*mine).correlate(Character).scalar_subquery()
    latest = type_coerce(case((last > Character.updated_at, last), else_=Character.updated_at), _TIME)
    return count, latest


def list_characters(
    session: Session,
    query: str = "",
    where: Any = None,
    conversations: Any = None,
    limit: int | None = None,
    offset: int = 0,
    notes_of: Any = None,
) -> list[CharacterSummary]:
    """The characters `where` admits (all with None), newest activity first, filtered by a
    case-insensitive search of name and notes (see `matching`); `limit`/`offset` give one page of
    them. Conversation counts and activity are of the conversations `conversations` admits.

    The page is chosen first, on small columns; only its rows then read their thumbnails."""
    count, latest = _activity(conversations)
    page = matching(select(Character.id), where, query, notes_of)
    page = page.order_by(latest.desc(), col(Character.id).desc()).offset(offset).limit(limit)
    ids = list(session.exec(page).all())
    if not ids:
        return []
    thumb = (
        select(SheetImage.thumbnail)
        .where(SheetImage.character_id == Character.id, SheetImage.position == 0)
        .correlate(Character)
        .scalar_subquery()
    )
    stmt = select(
        Character.id,
        Character.name,
        Character.language,
        Character.notes,
        thumb,
        count,
        latest,
        Character.owner_id,
        User.name,
        User.email,
        Character.shared,
    ).join(User, col(User.id) == Character.owner_id)
    rows = {r[0]: r for r in session.exec(stmt.where(col(Character.id).in_(ids))).all()}
    return [
        CharacterSummary(
            id=r[0],
            name=r[1],
            language=r[2],
            notes=r[3],
            thumbnail=r[4],
            conversation_count=r[5],
            last_activity=r[6],
            owner_id=r[7],
            owner_name=r[8] or r[9],
            shared=r[10],
        )
        for r in (rows[i] for i in ids if i in rows)
    ]


def character_names(session: Session, where: Any = None, conversations: Any = None) -> dict[int, str]:
    """The name of every character `where` admits, by id, newest activity first: a picker's options."""
    _, latest = _activity(conversations)
    stmt = matching(select(Character.id, Character.name), where)
    return dict(session.exec(stmt.order_by(latest.desc(), col(Character.id).desc())).all())


def get_images(session: Session, character_id: int) -> list[SheetImage]:
    """The character's image rows (thumbnails, no full pictures) in position order, main sheet first."""
    stmt = select(SheetImage).where(SheetImage.character_id == character_id).order_by(SheetImage.position)
    return list(session.exec(stmt).all())


def sheets(session: Session, character_id: int) -> list[images_.Stored[SheetImage]]:
    """Every image with its full picture, in position order: what the model sees."""
    return images_.with_data(session, SheetImage, get_images(session, character_id))


def get_main_image(session: Session, character_id: int) -> images_.Stored[SheetImage] | None:
    """The main sheet alone (position 0) with its full picture, without loading the others."""
    stmt = select(SheetImage).where(SheetImage.character_id == character_id, SheetImage.position == 0)
    found = images_.with_data(session, SheetImage, session.exec(stmt).all())
    return found[0] if found else None


def add_images(session: Session, character_id: int, images: Iterable[ImageData]) -> list[SheetImage]:
    """Append images after the existing ones."""
    _require(session, character_id)
    last = session.exec(select(func.max(SheetImage.position)).where(SheetImage.character_id == character_id)).one()
    start = 0 if last is None else last + 1
    added = images_.store(session, SheetImage, images, character_id=character_id, position=start)
    _touch(session, character_id)
    session.flush()
    return added


def remove_image(session: Session, image_id: int) -> None:
    """Remove one image; the next one becomes the main sheet if the main one goes."""
    image = session.get(SheetImage, image_id)
    if image is None:
        return
    ids = [s.id for s in get_images(session, image.character_id)]
    if len(ids) == 1:
        raise StorageError("A character needs at least one reference sheet; add another before removing this one.")
    character_id = image.character_id
    session.delete(image)
    session.flush()
    reorder_images(session, character_id, [i for i in ids if i != image_id])


def reorder_images(session: Session, character_id: int, ordered_ids: Sequence[int]) -> None:
    """Set positions to the order given; the first id becomes the main sheet."""
    rows = {s.id: s for s in get_images(session, character_id)}
    if sorted(rows) != sorted(ordered_ids):
        raise StorageError("The new order must list each of the character's images exactly once.")
    # Two passes: positions are unique per character, so park them out of the way first.
    for i, image_id in enumerate(ordered_ids):
        rows[image_id].position = -1 - i
    session.flush()
    for i, image_id in enumerate(ordered_ids):
        rows[image_id].position = i
    _touch(session, character_id)
    session.flush()


def set_main_image(session: Session, character_id: int, image_id: int) -> None:
    ids = [s.id for s in get_images(session, character_id)]
    reorder_images(session, character_id, [image_id] + [i for i in ids if i != image_id])


def _require(session: Session, character_id: int) -> Character:
    return require(session, Character, character_id, StorageError(f"Character {character_id} no longer exists."))


def _touch(session: Session, character_id: int) -> None:
    touch(session, Character, character_id)
