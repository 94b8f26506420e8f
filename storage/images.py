"""Stored pictures (character sheets and chat attachments): the row and its full bytes, kept apart.

A row (names, size, sha256, thumbnail) is what lists and pages read; the full normalized picture sits
in the matching bytes table and is read only for the model, an export or a full-size view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import func, insert, literal, select
from sqlmodel import Session, col

from storage.tables import Attachment, AttachmentBytes, ImageBytes, ImageData, SheetImage, SheetImageBytes

Row = TypeVar("Row", SheetImage, Attachment)
BYTES: dict[type, type[ImageBytes]] = {SheetImage: SheetImageBytes, Attachment: AttachmentBytes}


class Stored(NamedTuple, Generic[Row]):
    """A stored image's row with its full picture (`core.base.sheets.Picture.of` makes what the model
    sees of it)."""

    row: Row
    data: bytes


def store(session: Session, kind: type[Row], images: Iterable[ImageData], **keys: Any) -> list[Row]:
    """Rows of `kind` for `images` (with `keys`; a `position` key counts up from its value), and
    their bytes, in the caller's transaction."""
    start, images = keys.pop("position", None), list(images)
    rows = [
        kind.from_image(image, **keys, **({} if start is None else {"position": start + i}))
        for i, image in enumerate(images)
    ]
    session.add_all(rows)
    session.flush()
    session.add_all(BYTES[kind](image_id=row.id, data=image.data) for row, image in zip(rows, images, strict=True))
    session.flush()
    return rows


def with_data(session: Session, kind: type[Row], rows: Sequence[Row]) -> list[Stored[Row]]:
    """`rows` with their full pictures, in the order given (a row whose bytes are gone is left out)."""
    data = data_of(session, kind, [row.id for row in rows if row.id is not None])
    return [Stored(row, data[row.id]) for row in rows if row.id in data]


def data_of(session: Session, kind: type[Row], ids: Sequence[int]) -> dict[int, bytes]:
    """The full pictures of rows `ids` of `kind`, by id (missing ones are left out)."""
    if not ids:
        return {}
    table = BYTES[kind]
    found = session.execute(select(table.image_id, table.data).where(col(table.image_id).in_(list(ids))))
    return {image_id: data for image_id, data in found.all()}


def copy_data(session: Session, kind: type[Row], pairs: Iterable[tuple[int, int]]) -> None:
    """Give each new row the bytes of its source row, `(source id, new id)`, copied inside the database."""
    table = BYTES[kind]
    for source, new in pairs:
        copied = select(literal(new), table.data).where(table.image_id == source)
        session.execute(insert(table).from_select(["image_id", "data"], copied))
    session.flush()


def image_sizes(session: Session, kind: type[Row], ids: Sequence[int]) -> dict[int, int]:
    """The byte size of rows `ids`' full pictures, by id, measured in the database (no bytes read)."""
    if not ids:
        return {}
    table = BYTES[kind]
    found = session.execute(select(table.image_id, func.length(table.data)).where(col(table.image_id).in_(list(ids))))
    return {image_id: size for image_id, size in found.all()}
