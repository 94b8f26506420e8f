"""The tables: characters, their sheet images, conversations, messages and chat attachments.

Character fields mirror a Tavern Card V2 so that an imported card round-trips; our own data
(notes, reply language) sits beside them. Several replies for one turn share `(conversation, turn)`
with distinct `variant`s, and exactly one of them is `chosen`: the story continues from that one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Integer, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC; SQLModel stores it as UTC and hands it back aware."""
    return datetime.now(UTC)


def _fk(target: str) -> Any:
    """A foreign key the database itself cascades (so even raw SQL deletes leave no orphans)."""
    return Field(sa_column=Column(Integer, ForeignKey(target, ondelete="CASCADE"), nullable=False, index=True))


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    PARTIAL = "partial"  # stopped, failed part-way or the server died while it streamed
    ERROR = "error"  # nothing came back; `error` says why


class Character(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    owner: str | None = Field(default=None, index=True)  # for multi-user deployments
    name: str = Field(default="", index=True)
    notes: str = ""  # the user's own words: what the picture does not show
    language: str = "English"  # the language the character replies in
    # Tavern Card V2 profile fields.
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    alternate_greetings: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    mes_example: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    creator_notes: str = ""  # shown to people, never put in a prompt
    tags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    character_book: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class StoredImage(SQLModel):
    """What every stored picture carries: normalized by `core.sheets.prepare_image`, with a thumbnail."""

    original_name: str = ""
    mime_type: str = "image/png"
    width: int
    height: int
    sha256: str = Field(index=True)
    data: bytes = Field(sa_type=LargeBinary, nullable=False)
    thumbnail: bytes = Field(sa_type=LargeBinary, nullable=False)
    created_at: datetime = Field(default_factory=utcnow)


class SheetImage(StoredImage, table=True):
    """A reference image of a character; position 0 is the main sheet."""

    __table_args__ = (UniqueConstraint("character_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    character_id: int = _fk("character.id")
    position: int = 0


class Conversation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    character_id: int = _fk("character.id")
    title: str = ""
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Attachment(StoredImage, table=True):
    """An image the user attached to a chat message (normalized like sheets)."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = _fk("conversation.id")


class Message(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "turn", "variant"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = _fk("conversation.id")
    turn: int = Field(default=0, index=True)  # 0, 1, 2 … in story order
    variant: int = 0  # alternatives for the same turn (regenerate)
    chosen: bool = True
    role: str = Role.USER
    text: str = ""
    attachment_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    status: str = MessageStatus.COMPLETE
    error: str = ""
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
