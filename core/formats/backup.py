"""The library backup file (format `refsheet-chat-backup`, version 1): its members, its rows as
written and read back, and every check a restore makes before anything is stored.

- `manifest.json`: format and version, the app, when it was made, its scope (whose library, or
  the whole server's), counts, and the sha256 and size of every other member;
- `users.json`: the people in scope (identity provider issuer and subject, email, name, persona,
  interface language);
- `characters.jsonl`: one character a line: uid, owner identity, shared, timestamps, every profile
  field, and its reference images (position, names, MIME type, size, sha256, the files below);
- `conversations.jsonl`: one conversation a line: uid, its character's uid, owner identity, title,
  settings, an imported chat's `chat_metadata`, timestamps, its attachments, and every message with
  its alternatives (turn, variant, chosen, role, text, status, error, stats, hidden, speaker, what an
  imported chat carries, times, the attachments it carries by their key);
- `images/<sha256>.png`: every full picture once, however many rows hold it;
  `thumbnails/<sha256>.jpg`: their thumbnails, likewise.

Reading checks the manifest, every checksum, every row (strict JSON, the row models below, what the
tables require of uids, positions and turns) and decodes every picture and thumbnail whole: a
truncated picture (a valid header, checksums redone) would otherwise break every page that shows it.
Pure format code: writing takes rows, reading gives `Contents`; storing is `core.services.backup`'s.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Annotated, Any, Self

from PIL import Image
from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlmodel import SQLModel

from core.base.errors import UserError
from core.base.i18n import UI_LANGUAGES
from core.base.profile import Profile
from core.base.sampling import InvalidSampler, SamplerSettings
from core.base.sheets import ACCEPTED_FORMATS, ImageLimits
from core.base.text import clean, dumps, loads
from core.formats.archive import ZipLimits, read_zip
from storage.tables import (
    MAX_PERSONA_DESCRIPTION,
    MAX_PERSONA_NAME,
    Attachment,
    Character,
    CharacterFields,
    Conversation,
    ConversationFields,
    Identity,
    MessageFields,
    MessageStatus,
    PersonFields,
    PictureFacts,
    Role,
    SheetImage,
    StoredImage,
    User,
    as_utc,
    utcnow,
)

FORMAT, VERSION, APP = "refsheet-chat-backup", 1, "RefSheet Chat"
MANIFEST, USERS, CHARACTERS, CONVERSATIONS = "manifest.json", "users.json", "characters.jsonl", "conversations.jsonl"
MAX_UPLOAD_MB = 1024  # the largest backup read (the restore uploader's limit, over Streamlit's own)
# What a restore unpacks at most: pictures are stored as they are, so a backup inflates to about its
# own size, and a restore holds the file and its contents in memory (about twice the file) until done.
LIMITS = ZipLimits(member_bytes=256 * 2**20, total_bytes=MAX_UPLOAD_MB * 2**20, members=200_000)
EXTENSIONS = {mime: fmt.lower().replace("jpeg", "jpg") for fmt, mime in ACCEPTED_FORMATS.items()}
MAX_THUMBNAIL_SIDE = 1024


class BackupError(UserError):
    """A file that is not a backup this app can restore, saying which member is wrong; nothing was stored."""

    namespace = "backup"


# -- the format, as rows are written and read back ------------------------------------------------
Uid = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
SHA256 = re.compile(r"[0-9a-f]{64}")
LONGEST = 2000  # characters in a person's issuer, subject, email or name


class _Row(SQLModel):
    """A backup row: read strictly, extra keys ignored (a newer minor version may add some)."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        """Every time aware and in UTC (one without a zone is taken as UTC), and none in the future: a
        row dated 2999 would sort first in everyone's lists for ever."""
        if isinstance(value, datetime):
            return min(as_utc(value), utcnow())
        return value


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(problem)


# The entries take their fields from the tables' own field sets (`storage.tables`): a column added
# there is in the backup too. What a backup from a stranger must also satisfy is checked here.
class Person(_Row, Identity):
    """Who owns a row: known by their identity provider's issuer and subject."""

    @model_validator(mode="after")
    def _sized(self) -> Self:
        _require(0 < len(self.issuer) <= LONGEST and 0 < len(self.subject) <= LONGEST, "issuer and subject")
        _require(len(self.email) <= LONGEST and len(self.name) <= LONGEST, "email and name at most 2000 characters")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return self.issuer, self.subject


class UserEntry(Person, PersonFields):
    @model_validator(mode="after")
    def _persona(self) -> Self:
        _require(len(self.persona_name) <= MAX_PERSONA_NAME, f"persona_name at most {MAX_PERSONA_NAME} characters")
        _require(len(self.persona_description) <= MAX_PERSONA_DESCRIPTION, "persona_description too long")
        _require(self.ui_language in ("", *UI_LANGUAGES), f"ui_language one of {', '.join(UI_LANGUAGES)}, or empty")
        return self


class PictureEntry(_Row, PictureFacts):
    file: str  # the member with the picture
    thumbnail: str  # the member with its thumbnail

    @model_validator(mode="after")
    def _sane(self) -> Self:
        _require(self.width > 0 and self.height > 0, "width and height must be positive")
        _require(bool(SHA256.fullmatch(self.sha256)), "sha256 must be 64 hex digits")
        _require(len(self.original_name) <= 1000, "original_name at most 1000 characters")
        return self


class SheetEntry(PictureEntry):
    position: int = Field(ge=0)


class AttachmentEntry(PictureEntry):
    key: int  # what this conversation's messages call it


class CharacterEntry(_Row, CharacterFields):
    uid: Uid
    owner: Person
    profile: Profile
    images: list[SheetEntry] = Field(min_length=1)


Stat = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=64)]  # a reply's figures


class MessageEntry(_Row, MessageFields):
    role: Role  # the table stores the text of these: a backup must hold one of them
    status: MessageStatus = MessageStatus.COMPLETE
    stats: dict[str, Stat] = Field(default_factory=dict)  # plain values only: the caption reads them
    attachments: list[int] = Field(default_factory=list)  # keys into the conversation's attachments

    @field_validator("status", mode="after")
    @classmethod
    def _not_writing(cls, value: MessageStatus) -> MessageStatus:
        """A reply that was being written when the backup was made is unfinished now (its writer is
        not coming back), not one that others must watch being written."""
        return MessageStatus.PARTIAL if value == MessageStatus.WRITING else value

    @model_validator(mode="after")
    def _placed(self) -> Self:
        _require(self.turn >= 0 and self.variant >= 0, "turn and variant must not be negative")
        return self


class ConversationEntry(_Row, ConversationFields):
    uid: Uid
    character_uid: Uid
    owner: Person
    title: str = Field(default="", max_length=2000)

    @field_validator("settings", mode="after")
    @classmethod
    def _sampler(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Reply settings that the chat can use (numbers in range), or the row is refused."""
        try:
            SamplerSettings.from_dict(value)
        except InvalidSampler as exc:
            raise ValueError(exc.message("en")) from exc
        return value

    attachments: list[AttachmentEntry] = Field(default_factory=list)
    messages: list[MessageEntry] = Field(default_factory=list)


class FileEntry(_Row):
    sha256: Sha
    size: int = Field(ge=0)


class Scope(_Row):
    everyone: bool  # an admin's backup: every person's rows
    user: Person  # who made it


class Manifest(_Row):
    format: str
    version: int
    app: str = APP
    created: datetime
    scope: Scope
    counts: dict[str, int] = Field(default_factory=dict)
    files: dict[str, FileEntry]


def picture_file(row: StoredImage) -> str:
    return f"images/{row.sha256}.{EXTENSIONS.get(row.mime_type, 'png')}"


def thumbnail_file(row: StoredImage) -> str:
    return f"thumbnails/{hashlib.sha256(row.thumbnail).hexdigest()}.jpg"


def fields_of(row: Any, fields: type[SQLModel]) -> dict[str, Any]:
    """The row's values of one of the tables' field sets (`PictureFacts`, `MessageFields`…), times as
    ISO 8601 in UTC: what a backup line holds of it."""
    values = {name: getattr(row, name) for name in fields.model_fields}
    return {k: when(v) if isinstance(v, datetime) else v for k, v in values.items()}


def picture_entry(row: StoredImage) -> dict[str, Any]:
    return {**fields_of(row, PictureFacts), "file": picture_file(row), "thumbnail": thumbnail_file(row)}


def character_entry(character: Character, sheets: Sequence[SheetImage], people: dict[int, User]) -> dict[str, Any]:
    return {
        **fields_of(character, CharacterFields),
        "owner": owner_of(people, character.owner_id),
        "profile": {name: getattr(character, name) for name in Profile.model_fields},
        "images": [{**picture_entry(row), "position": row.position} for row in sheets],
    }


def conversation_entry(
    conv: Conversation, character_uid: str, attachments: Sequence[Attachment], messages: Sequence[Any], people: dict
) -> dict[str, Any]:
    keys = {row.id for row in attachments}
    return {
        **fields_of(conv, ConversationFields),
        "character_uid": character_uid,
        "owner": owner_of(people, conv.owner_id),
        "attachments": [{**picture_entry(row), "key": row.id} for row in attachments],
        "messages": [
            {**fields_of(m, MessageFields), "attachments": [i for i in m.attachment_ids if i in keys]}
            for m in messages  # an attachment deleted since is left out
        ],
    }


def person_of(user: User) -> Person:
    return Person(**fields_of(user, Identity))


def owner_of(people: dict[int, User], user_id: int) -> dict[str, str]:
    user = people.get(user_id)
    return person_of(user).model_dump() if user else {"issuer": "?", "subject": str(user_id)}


def user_entry(user: User) -> dict[str, Any]:
    return fields_of(user, PersonFields)


def when(value: datetime) -> str:
    return as_utc(value).isoformat()


def json_bytes(value: Any) -> bytes:
    return dumps(value, compact=True).encode()


class ZipWriter:
    """A zip written member by member, recording each member's sha256 and size for the manifest."""

    def __init__(self, out: IO[bytes], created: datetime) -> None:
        self.zip = zipfile.ZipFile(out, "w", allowZip64=True)
        self.date = created.timetuple()[:6]
        self.files: dict[str, FileEntry] = {}
        self.pictures = 0

    def __enter__(self) -> ZipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.zip.close()

    def _info(self, name: str, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, self.date)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        return info

    def put(self, name: str, data: bytes, *, compress: bool = True, checksum: bool = True) -> None:
        self.zip.writestr(self._info(name, compress), data)
        if checksum:
            self.files[name] = FileEntry(sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def thumbnails(self, rows: Sequence[StoredImage]) -> None:
        for row in rows:
            if thumbnail_file(row) not in self.files:
                self.put(thumbnail_file(row), row.thumbnail, compress=False)

    @contextmanager
    def spooled(self, name: str) -> Iterator[Any]:
        """A JSON Lines member: lines are kept aside (in memory, on disk past 16 MB) while pictures
        are written, then copied into the zip in one piece."""
        digest, size = hashlib.sha256(), 0
        with tempfile.SpooledTemporaryFile(max_size=16 * 2**20) as spool:

            def line(value: Any) -> None:
                nonlocal size
                data = json_bytes(value) + b"\n"
                digest.update(data)
                size += len(data)
                spool.write(data)

            yield line
            spool.seek(0)
            with self.zip.open(self._info(name, True), "w", force_zip64=True) as member:
                while chunk := spool.read(2**20):
                    member.write(chunk)
        self.files[name] = FileEntry(sha256=digest.hexdigest(), size=size)


# -- restore: check everything, then write everything ---------------------------------------------
@dataclass
class Contents:
    """A backup read and checked, nothing stored yet."""

    manifest: Manifest
    users: list[UserEntry]
    characters: list[CharacterEntry]
    conversations: list[ConversationEntry]
    files: dict[str, bytes]


def read_backup(raw: bytes, name: str) -> Contents:
    """The backup's rows and files, every checksum, row and picture checked; raises `BackupError`."""
    files = read_zip(raw, name, LIMITS)
    manifest = _manifest(files, name)
    users = _parsed(files, USERS, UserEntry, name, whole=True)
    characters = _parsed(files, CHARACTERS, CharacterEntry, name)
    conversations = _parsed(files, CONVERSATIONS, ConversationEntry, name)
    contents = Contents(manifest, users, characters, conversations, files)
    _check_rows(contents, name)
    return contents


def _manifest(files: dict[str, bytes], name: str) -> Manifest:
    raw = files.get(MANIFEST)
    try:
        data = loads(raw) if raw is not None else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BackupError("not_backup", name=name)
    if not isinstance(data.get("version"), int) or data["version"] > VERSION:
        raise BackupError("newer", name=name, version=str(data.get("version"))[:20])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise BackupError("bad_rows", name=name, member=MANIFEST, line=1, detail=_detail(exc)) from exc
    for member in (USERS, CHARACTERS, CONVERSATIONS, *manifest.files):
        entry = manifest.files.get(member)
        if entry is None or member not in files:
            raise BackupError("missing", name=name, member=member)
        data = files[member]
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            raise BackupError("checksum", name=name, member=member)
    for member in files:
        if member != MANIFEST and member not in manifest.files:
            raise BackupError("unlisted", name=name, member=member)
    return manifest


def _rows(files: dict[str, bytes], member: str, name: str, whole: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, value) of a JSON Lines member (or of a JSON list, `whole`), cleaned for storing.
    Strict JSON: NaN, Infinity and nesting too deep to parse are refused, naming the line."""

    def parsed(raw: bytes, number: int) -> Any:
        try:
            return loads(raw)
        except ValueError as exc:  # JSONDecodeError, bad UTF-8, NaN and too deep are all ValueErrors
            raise BackupError("bad_rows", name=name, member=member, line=number, detail=str(exc)[:200]) from exc

    if whole:
        values = parsed(files[member], 1)
        if not isinstance(values, list):
            raise BackupError("bad_rows", name=name, member=member, line=1, detail="not a list")
        yield from ((i, clean(v)) for i, v in enumerate(values, 1))
        return
    for number, line in enumerate(files[member].splitlines(), 1):
        if line.strip():
            yield number, clean(parsed(line, number))


def _parsed(files: dict[str, bytes], member: str, model: type[Any], name: str, whole: bool = False) -> list[Any]:
    rows = []
    for number, value in _rows(files, member, name, whole):
        try:
            rows.append(model.model_validate(value))
        except ValidationError as exc:
            raise BackupError("bad_rows", name=name, member=member, line=number, detail=_detail(exc)) from exc
    return rows


def _detail(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"[:200]


def _check_rows(contents: Contents, name: str) -> None:
    """What the tables require of the rows (unique uids, positions, turns), and every picture they
    name present and, by its header, the picture the row describes."""
    files, checked = contents.files, set[str]()

    def refuse(member: str, line: int, detail: str) -> None:
        raise BackupError("bad_rows", name=name, member=member, line=line, detail=detail)

    def picture(member: str, line: int, entry: PictureEntry) -> None:
        for path in (entry.file, entry.thumbnail):
            if path not in files or path in (MANIFEST, USERS, CHARACTERS, CONVERSATIONS):
                refuse(member, line, f"no file {path[:100]}")
        if contents.manifest.files[entry.file].sha256 != entry.sha256:
            raise BackupError("checksum", name=name, member=entry.file)
        if entry.file not in checked:
            _check_picture(files[entry.file], entry, name)
            _check_thumbnail(files[entry.thumbnail], entry.thumbnail, name)
            checked.add(entry.file)

    seen: set[str] = set()
    for line, character in enumerate(contents.characters, 1):
        positions = [image.position for image in character.images]
        if character.uid in seen or len(set(positions)) != len(positions) or 0 not in positions:
            refuse(CHARACTERS, line, "a uid twice, or image positions twice or without a main sheet")
        seen.add(character.uid)
        for image in character.images:
            picture(CHARACTERS, line, image)
    seen.clear()
    for line, conv in enumerate(contents.conversations, 1):
        keys = [a.key for a in conv.attachments]
        turns = [(m.turn, m.variant) for m in conv.messages]
        used = {key for m in conv.messages for key in m.attachments}
        if conv.uid in seen or len(set(keys)) != len(keys) or len(set(turns)) != len(turns) or used - set(keys):
            refuse(CONVERSATIONS, line, "a uid, attachment or (turn, variant) twice, or an unknown attachment")
        seen.add(conv.uid)
        for attachment in conv.attachments:
            picture(CONVERSATIONS, line, attachment)


def _check_picture(data: bytes, entry: PictureEntry, name: str) -> None:
    """The picture is the format its row says, at its size, within the pixel limit (from the header,
    before any pixel is decoded), and then decodes whole: Pillow opens a truncated file happily, and
    only decoding every pixel finds it."""
    opened = _decoded(data, ImageLimits().max_pixels)
    if opened is None or ACCEPTED_FORMATS.get(opened[0]) != entry.mime_type or opened[1] != (entry.width, entry.height):
        raise BackupError("bad_image", name=name, member=entry.file)


def _check_thumbnail(data: bytes, member: str, name: str) -> None:
    opened = _decoded(data, MAX_THUMBNAIL_SIDE**2)
    if opened is None or opened[0] not in ("JPEG", "PNG") or max(opened[1]) > MAX_THUMBNAIL_SIDE:
        raise BackupError("bad_image", name=name, member=member)


def _decoded(data: bytes, max_pixels: int) -> tuple[str, tuple[int, int]] | None:
    """(format, size) of a picture that decodes completely and is no larger than `max_pixels`, else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.size[0] * image.size[1] > max_pixels:
                    return None
                image.load()
                return str(image.format), image.size
    except Exception:  # noqa: BLE001 - whatever Pillow raises, it is not a picture we store
        return None
