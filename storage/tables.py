"""The tables: characters, their sheet images, conversations, messages and chat attachments.

`CharacterProfile` is the one definition of a character's profile: the `character` table inherits
it, and the prompt, the card mapping and the forms read their field lists from its metadata (see
`core.base.profile`). Its fields mirror a Tavern Card V2 so an imported card round-trips; our own data
(notes, reply language) sits beside them. Several replies for one turn share `(conversation, turn)`
with distinct `variant`s, and exactly one of them is `chosen`: the story continues from that one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, Self

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer, LargeBinary, UniqueConstraint
from sqlmodel import AutoString, Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC: what every time column stores."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored time, aware and in UTC: SQLite hands times back naive, and they were stored as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def new_uid() -> str:
    """A row's identity across databases: backups keep it, restores recognise what is already there."""
    return uuid.uuid4().hex


def _uid() -> Any:
    return Field(default_factory=new_uid, max_length=32, unique=True, index=True)


def _fk(target: str) -> Any:
    """A foreign key the database itself cascades (so even raw SQL deletes leave no orphans)."""
    return Field(sa_column=Column(Integer, ForeignKey(target, ondelete="CASCADE"), nullable=False, index=True))


def _owner() -> Any:
    """The user a row belongs to. Users are never deleted, so nothing cascades from one."""
    return Field(sa_column=Column(Integer, ForeignKey("app_user.id"), nullable=False, index=True))


# SQLite reuses a deleted row's id unless the table is AUTOINCREMENT (migration 0005): an old deep link
# must never open a newer row. PostgreSQL's sequences never go back anyway.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}
LOCAL_USER_ID = 1  # the one user of an install without sign-in; the first migration of users creates it
MAX_LINE = 200  # characters in a one-line profile field: names are indexed, and an index row has a size limit
MAX_TEXT = 200_000  # characters in a text profile field
MAX_PERSONA_NAME = 100  # characters
MAX_PERSONA_DESCRIPTION = 2_000  # characters: a paragraph, read by every character in every reply


def _profile_field(kind: str, *, prompt: bool = False, card: bool = True, **options: Any) -> Any:
    """A profile field. `kind` says how it is edited (line, text, greetings, tags, language, data);
    `prompt`: the model reads it; `card`: a Tavern card `data` field of the same name."""
    if kind in ("greetings", "tags"):
        options.update(default_factory=list, sa_type=JSON, nullable=False)
    elif kind == "data":
        if "default" not in options:
            options["default_factory"] = dict
        options.update(sa_type=JSON)
    else:  # text, checked for length wherever a profile is validated (the column itself is unbounded)
        options.setdefault("default", "")
        options.update(max_length=MAX_TEXT if kind == "text" else MAX_LINE, sa_type=AutoString)
    return Field(schema_extra={"json_schema_extra": {"kind": kind, "prompt": prompt, "card": card}}, **options)


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    NARRATOR = "narrator"  # neither side: SillyTavern's `/sys` lines, placed in the prompt as narration


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    WRITING = "writing"  # being streamed now; the writer renews `updated_at` while it lives
    PARTIAL = "partial"  # stopped, or failed part-way
    ERROR = "error"  # nothing came back; `error` says why


class CharacterProfile(SQLModel):
    """Everything a user or a card says about a character, in form order."""

    name: str = _profile_field("line", prompt=True, index=True)
    notes: str = _profile_field("text", prompt=True, card=False)  # the user's words: what the picture does not show
    language: str = _profile_field("language", prompt=True, card=False, default="English")  # the reply language
    first_mes: str = _profile_field("text")
    alternate_greetings: list[str] = _profile_field("greetings")
    description: str = _profile_field("text", prompt=True)
    personality: str = _profile_field("text", prompt=True)
    scenario: str = _profile_field("text", prompt=True)
    mes_example: str = _profile_field("text", prompt=True)
    system_prompt: str = _profile_field("text", prompt=True)
    post_history_instructions: str = _profile_field("text", prompt=True)
    creator_notes: str = _profile_field("text")  # shown to people, never put in a prompt
    tags: list[str] = _profile_field("tags")
    creator: str = _profile_field("line")
    character_version: str = _profile_field("line")
    extensions: dict[str, Any] = _profile_field("data", nullable=False)
    character_book: dict[str, Any] | None = _profile_field("data", default=None, nullable=True)


class Identity(SQLModel):
    """Who a person is to their identity provider: its issuer and subject (stable, unlike an email),
    with the (verified) address and the name it gives. Backups name owners by these."""

    issuer: str
    subject: str
    email: str = Field(default="", index=True)
    name: str = ""


class PersonFields(Identity):
    """A person as a backup carries them: their identity, persona, interface language and visits."""

    persona_name: str = ""  # what characters call this person ({{user}}); the provider's name when empty
    persona_description: str = ""  # told to the characters: who they are talking with
    ui_language: str = ""  # the interface language they chose ("": their browser's)
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


class User(PersonFields, table=True):
    """A person, known by their identity provider's issuer and subject."""

    __tablename__ = "app_user"  # "user" is a reserved word in PostgreSQL
    __table_args__ = (UniqueConstraint("issuer", "subject"), NEVER_REUSE_IDS)

    id: int | None = Field(default=None, primary_key=True)
    # Signing out everywhere, on the identity provider's clock (ID token `iat`, seconds): the newest
    # identity seen, and that value at the last Sign out (identities issued up to it no longer count).
    latest_iat: int | None = Field(default=None, sa_type=BigInteger)
    signed_out_iat: int | None = Field(default=None, sa_type=BigInteger)


class CharacterFields(SQLModel):
    """A character's own columns besides its profile and keys: a backup carries these too."""

    uid: str = _uid()
    shared: bool = Field(default=False, index=True)  # the team may see it, chat with it and copy it
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Character(CharacterProfile, CharacterFields, table=True):
    __table_args__ = (NEVER_REUSE_IDS,)

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = _owner()


class ImageData(Protocol):
    """A validated, normalized picture (`core.base.sheets.PreparedImage` is one): what a row stores."""

    data: bytes
    thumbnail: bytes
    width: int
    height: int
    sha256: str
    original_name: str
    mime_type: str


class PictureFacts(SQLModel):
    """What is known of a stored picture besides its bytes: a backup carries these too."""

    original_name: str = ""
    mime_type: str = "image/png"
    width: int
    height: int
    sha256: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class StoredImage(PictureFacts):
    """What every stored picture's row carries: normalized by `core.base.sheets.prepare_image`, with a
    thumbnail. The full picture lives apart, in its `ImageBytes` table: lists read these rows (names
    and thumbnails) and must not page through megabytes of blob to reach them."""

    thumbnail: bytes = Field(sa_type=LargeBinary, nullable=False)

    @classmethod
    def from_image(cls, image: ImageData, **keys: Any) -> Self:
        """The one conversion from a picture to a row (`keys`: the owning row and position); its full
        bytes go to the matching `ImageBytes` row (`storage.images.store` does both)."""
        fields = ("original_name", "mime_type", "width", "height", "sha256", "thumbnail")
        return cls(**{name: getattr(image, name) for name in fields}, **keys)


class ImageBytes(SQLModel):
    """The full normalized picture of one stored image, one-to-one with its row and deleted with it."""

    data: bytes = Field(sa_type=LargeBinary, nullable=False)


class SheetImage(StoredImage, table=True):
    """A reference image of a character; position 0 is the main sheet."""

    __table_args__ = (UniqueConstraint("character_id", "position"), NEVER_REUSE_IDS)

    id: int | None = Field(default=None, primary_key=True)
    character_id: int = _fk("character.id")
    position: int = 0


class SheetImageBytes(ImageBytes, table=True):
    image_id: int = Field(sa_column=Column(Integer, ForeignKey("sheetimage.id", ondelete="CASCADE"), primary_key=True))


class ConversationFields(SQLModel):
    """A conversation's own columns besides its keys: a backup carries these too."""

    uid: str = _uid()
    title: str = ""
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # An imported chat's own settings (SillyTavern's `chat_metadata`: the author's note…), written back on export
    chat_metadata: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow, index=True)


class Conversation(ConversationFields, table=True):
    __table_args__ = (NEVER_REUSE_IDS,)

    id: int | None = Field(default=None, primary_key=True)
    character_id: int = _fk("character.id")
    owner_id: int = _owner()  # whoever talks: private to them, even with someone else's shared character


class Attachment(StoredImage, table=True):
    """An image the user attached to a chat message (normalized like sheets)."""

    __table_args__ = (NEVER_REUSE_IDS,)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = _fk("conversation.id")


class AttachmentBytes(ImageBytes, table=True):
    image_id: int = Field(sa_column=Column(Integer, ForeignKey("attachment.id", ondelete="CASCADE"), primary_key=True))


class MessageFields(SQLModel):
    """A message as a backup carries it (without its conversation and attachment keys)."""

    turn: int = Field(default=0, index=True)  # 0, 1, 2 … in story order
    variant: int = 0  # alternatives for the same turn (regenerate)
    chosen: bool = True
    role: str = Role.USER
    text: str = ""
    status: str = MessageStatus.COMPLETE
    error: str = ""
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    hidden: bool = False  # kept and shown, but left out of what the model reads (SillyTavern's `is_system`)
    speaker: str = ""  # who said it, as an imported chat names them ("": the user or the character)
    # What an imported chat file says of this alternative that we do not use ourselves (SillyTavern's
    # `extra`, `send_date` as written, generation times, its other keys): written back on export.
    carried: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Message(MessageFields, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "turn", "variant"), NEVER_REUSE_IDS)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: int = _fk("conversation.id")
    attachment_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
