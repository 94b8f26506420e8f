"""Bulk reads and writes for library backups: rows a batch at a time, and rows inserted as they were.

Reads walk each table by id (`id > last … LIMIT n`), so a library of any size is read in batches of
the same size on every database and nothing holds a server-side cursor open. Writes let the database
give every row its id (PostgreSQL's sequences stay right) and keep the rows' own timestamps and uids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col, select

from storage.images import BYTES, Row
from storage.tables import Attachment, Character, Conversation, Message, SheetImage, User


def characters(session: Session, where: Any, batch: int) -> Iterator[list[Character]]:
    """Every character `where` admits (all with None), `batch` rows at a time by id."""
    last = 0
    while True:
        stmt = select(Character).where(col(Character.id) > last)
        if where is not None:
            stmt = stmt.where(where)
        rows = list(session.exec(stmt.order_by(col(Character.id)).limit(batch)).all())
        if not rows:
            return
        yield rows
        last = rows[-1].id


def conversations(session: Session, where: Any, batch: int) -> Iterator[list[tuple[Conversation, str]]]:
    """Every conversation `where` admits (all with None) with its character's uid, `batch` at a time by id."""
    last = 0
    while True:
        stmt = (
            select(Conversation, Character.uid)
            .join(Character, col(Character.id) == Conversation.character_id)
            .where(col(Conversation.id) > last)
        )
        if where is not None:
            stmt = stmt.where(where)
        rows = [(conv, uid) for conv, uid in session.exec(stmt.order_by(col(Conversation.id)).limit(batch)).all()]
        if not rows:
            return
        yield rows
        last = rows[-1][0].id


def images_of(session: Session, kind: type[Row], owner_ids: Sequence[int]) -> dict[int, list[Row]]:
    """The image rows (no full pictures) of these characters (`SheetImage`, by position) or
    conversations (`Attachment`, by id), grouped by owning row."""
    key = col(SheetImage.character_id) if kind is SheetImage else col(Attachment.conversation_id)
    order = col(SheetImage.position) if kind is SheetImage else col(Attachment.id)
    found: dict[int, list[Row]] = {i: [] for i in owner_ids}
    if owner_ids:
        for row in session.exec(select(kind).where(key.in_(list(owner_ids))).order_by(key, order)).all():
            found[getattr(row, key.key)].append(row)
    return found


def messages_of(session: Session, conversation_ids: Sequence[int]) -> dict[int, list[Message]]:
    """Every message of these conversations, alternatives included, by turn and variant."""
    found: dict[int, list[Message]] = {i: [] for i in conversation_ids}
    if conversation_ids:
        stmt = (
            select(Message)
            .where(col(Message.conversation_id).in_(list(conversation_ids)))
            .order_by(col(Message.conversation_id), col(Message.turn), col(Message.variant))
        )
        for message in session.exec(stmt).all():
            found[message.conversation_id].append(message)
    return found


def users(session: Session, ids: Iterable[int] | None = None) -> dict[int, User]:
    """These users (everyone with None), by id."""
    stmt = select(User).order_by(col(User.id))
    if ids is not None:
        stmt = stmt.where(col(User.id).in_(list(ids)))
    return {user.id: user for user in session.exec(stmt).all()}


def user_by_identity(session: Session, issuer: str, subject: str) -> User | None:
    return session.exec(select(User).where(User.issuer == issuer, User.subject == subject)).first()


def characters_by_uid(session: Session, uids: Iterable[str], where: Any = None) -> dict[str, Character]:
    """The characters already here with these uids (those `where` admits; all with None)."""
    return _by_uid(session, Character, uids, where)


def conversation_uids(session: Session, uids: Iterable[str]) -> set[str]:
    """Which of these conversation uids are already here."""
    return set(_by_uid(session, Conversation, uids))


def _by_uid(session: Session, table: Any, uids: Iterable[str], where: Any = None) -> dict[str, Any]:
    wanted, found = sorted(set(uids)), {}
    for start in range(0, len(wanted), 500):  # a bounded IN list on every database
        stmt = select(table).where(col(table.uid).in_(wanted[start : start + 500]))
        if where is not None:
            stmt = stmt.where(where)
        found.update({row.uid: row for row in session.exec(stmt).all()})
    return found


def add(session: Session, rows: Sequence[Any]) -> None:
    """Insert rows as given (no ids: the database numbers them); their ids are set afterwards."""
    session.add_all(rows)
    session.flush()


def add_images(session: Session, kind: type[Row], rows: Sequence[Row], data: Sequence[bytes]) -> None:
    """Insert image rows and, for each, its full picture."""
    add(session, rows)
    if rows:
        values = [{"image_id": row.id, "data": blob} for row, blob in zip(rows, data, strict=True)]
        session.execute(insert(BYTES[kind]), values)


def add_messages(session: Session, values: Sequence[dict[str, Any]]) -> None:
    """Insert messages given as column values, in one statement (many rows, no ids needed back)."""
    if values:
        session.execute(insert(Message), list(values))
