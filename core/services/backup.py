"""Library backup and restore: one zip with everything, read back into any library without duplicates.

The file (format `refsheet-chat-backup`, version 1):

- `manifest.json`: format and version, the app, when it was made, its scope (whose library, or
  everyone's), counts, and the sha256 and size of every other member;
- `users.json`: the people in scope (identity provider issuer and subject, email, name, persona);
- `characters.jsonl`: one character a line: uid, owner identity, shared, timestamps, every profile
  field, and its reference images (position, names, MIME type, size, sha256, the files below);
- `conversations.jsonl`: one conversation a line: uid, its character's uid, owner identity, title,
  settings, timestamps, its attachments, and every message with its alternatives (turn, variant,
  chosen, role, text, status, error, stats, times, the attachments it carries by their key);
- `images/<sha256>.png`: every full picture once, however many rows hold it;
  `thumbnails/<sha256>.jpg`: their thumbnails, likewise.

A restore checks the manifest, every checksum, every row and every picture's header before it writes
anything, then writes all of it in one transaction. Characters and conversations are known by their
uid: one already in the library is skipped (a skipped character still receives the backup's new
conversations with it), so restoring twice adds nothing the second time. The database numbers every
new row itself, so a backup from SQLite restores into PostgreSQL and back.

Scope: in the app everyone, admins included, backs up their own characters and their own
conversations (those with someone else's shared character carry only that character's uid), and
what they restore becomes theirs; nobody's backup holds another person's conversations. The
whole server (every person's rows, restored to their owners, known by issuer and subject) is
backed up and restored only by the operator, on the server (`python -m core.services.server_backup`), where
the database is readable anyway. The app refuses to restore such a backup.

A restore decodes every picture and thumbnail in full before storing anything: a truncated picture
(a valid header, checksums redone) would otherwise break every page that shows it.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Annotated, Any, BinaryIO

from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.base.errors import UserError
from core.base.profile import Profile
from core.base.sampling import InvalidSampler, SamplerSettings
from core.base.sheets import ACCEPTED_FORMATS, ImageLimits
from core.base.text import clean, dumps, loads
from core.formats.archive import ZipLimits, read_zip
from core.services import access
from core.services.users import MAX_PERSONA_DESCRIPTION, MAX_PERSONA_NAME, Actor
from storage import backup as store
from storage.images import data_of
from storage.tables import (
    LOCAL_USER_ID,
    Attachment,
    Character,
    Conversation,
    MessageStatus,
    Role,
    SheetImage,
    StoredImage,
    User,
    as_utc,
    utcnow,
)

FORMAT, VERSION, APP = "refsheet-chat-backup", 1, "RefSheet Chat"
MANIFEST, USERS, CHARACTERS, CONVERSATIONS = "manifest.json", "users.json", "characters.jsonl", "conversations.jsonl"
MAX_UPLOAD_MB = 1024  # the restore uploader's limit (it overrides Streamlit's server.maxUploadSize)
# What a restore unpacks at most: pictures are stored as they are, so a backup inflates to about its
# own size, and a restore holds the file and its contents in memory (about twice the file) until done.
LIMITS = ZipLimits(member_bytes=256 * 2**20, total_bytes=MAX_UPLOAD_MB * 2**20, members=200_000)
LOCAL = ("local", "local")  # the local user's identity (migration 0002), always id LOCAL_USER_ID
EXTENSIONS = {mime: fmt.lower().replace("jpeg", "jpg") for fmt, mime in ACCEPTED_FORMATS.items()}
MAX_THUMBNAIL_SIDE = 1024
BATCH = 100


class BackupError(UserError):
    """A file that is not a backup this app can restore, saying which member is wrong; nothing was stored."""

    namespace = "backup"


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did: rows added, rows skipped because they were already here."""

    characters_added: int = 0
    characters_skipped: int = 0
    conversations_added: int = 0
    conversations_skipped: int = 0
    conversations_unattached: int = 0  # their character is neither restored nor one the restorer may see
    messages_added: int = 0
    images_added: int = 0  # reference images and chat attachments
    users_added: int = 0


# -- the format, as rows are written and read back ------------------------------------------------
Uid = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Row(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        """Every time aware and in UTC (one without a zone is taken as UTC), and none in the future: a
        row dated 2999 would sort first in everyone's lists for ever."""
        if isinstance(value, datetime):
            return min(as_utc(value), utcnow())
        return value


class Person(_Row):
    """Who owns a row: known by their identity provider's issuer and subject."""

    issuer: str = Field(min_length=1, max_length=2000)
    subject: str = Field(min_length=1, max_length=2000)
    email: str = Field(default="", max_length=2000)
    name: str = Field(default="", max_length=2000)

    @property
    def key(self) -> tuple[str, str]:
        return self.issuer, self.subject


class UserEntry(Person):
    persona_name: str = Field(default="", max_length=MAX_PERSONA_NAME)
    persona_description: str = Field(default="", max_length=MAX_PERSONA_DESCRIPTION)
    first_seen: datetime | None = None
    last_seen: datetime | None = None


class PictureEntry(_Row):
    original_name: str = Field(default="", max_length=1000)
    mime_type: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    sha256: Sha
    created_at: datetime
    file: str
    thumbnail: str


class SheetEntry(PictureEntry):
    position: int = Field(ge=0)


class AttachmentEntry(PictureEntry):
    key: int  # what this conversation's messages call it


class CharacterEntry(_Row):
    uid: Uid
    owner: Person
    shared: bool = False
    created_at: datetime
    updated_at: datetime
    profile: Profile
    images: list[SheetEntry] = Field(min_length=1)


Stat = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=64)]  # a reply's figures


class MessageEntry(_Row):
    turn: int = Field(ge=0)
    variant: int = Field(ge=0)
    chosen: bool = True
    role: Role
    text: str = ""
    status: MessageStatus = MessageStatus.COMPLETE
    error: str = ""
    stats: dict[str, Stat] = Field(default_factory=dict)  # plain values only: the caption reads them
    created_at: datetime
    updated_at: datetime
    attachments: list[int] = Field(default_factory=list)

    @field_validator("status", mode="after")
    @classmethod
    def _not_writing(cls, value: MessageStatus) -> MessageStatus:
        """A reply that was being written when the backup was made is unfinished now (its writer is
        not coming back), not one that others must watch being written."""
        return MessageStatus.PARTIAL if value == MessageStatus.WRITING else value


class ConversationEntry(_Row):
    uid: Uid
    character_uid: Uid
    owner: Person
    title: str = Field(default="", max_length=2000)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("settings", mode="after")
    @classmethod
    def _sampler(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Reply settings that the chat can use (numbers in range), or the row is refused."""
        try:
            SamplerSettings.from_dict(value)
        except InvalidSampler as exc:
            raise ValueError(exc.message("en")) from exc
        return value

    created_at: datetime
    updated_at: datetime
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


# -- backup ----------------------------------------------------------------------------------------
def backup(db: Engine, actor: Actor) -> bytes:
    """The actor's own library as one zip file."""
    out = io.BytesIO()
    write_backup(db, actor, out)
    return out.getvalue()


def file_name(when: datetime | None = None) -> str:
    return f"refsheet-backup-{(when or utcnow()).strftime('%Y-%m-%d')}.zip"


def write_backup(db: Engine, actor: Actor, out: BinaryIO, *, everyone: bool = False) -> Manifest:
    """Write the backup to `out`, a batch of rows at a time: pictures go straight into the zip, each
    once; rows are spooled (to disk past a few MB) and added after them with the manifest.
    `everyone`: the whole server (the operator's command only; never reachable from a page)."""
    created = utcnow()
    characters = None if everyone else access.characters_owned(actor)
    conversations = None if everyone else access.conversations_seen(actor)
    counts: Counter[str] = Counter()
    with Session(db) as session, _ZipWriter(out, created) as archive:
        people = store.users(session, None if everyone else [actor.id])
        with archive.spooled(CHARACTERS) as lines:
            for batch in store.characters(session, characters, BATCH):
                sheets = store.images_of(session, SheetImage, [c.id for c in batch])
                _pictures(session, archive, SheetImage, [row for rows in sheets.values() for row in rows])
                for character in batch:
                    lines(_character_entry(character, sheets[character.id], people))
                counts.update(characters=len(batch), sheet_images=sum(map(len, sheets.values())))
        with archive.spooled(CONVERSATIONS) as lines:
            for pairs in store.conversations(session, conversations, BATCH):
                ids = [conv.id for conv, _ in pairs]
                attachments, messages = store.images_of(session, Attachment, ids), store.messages_of(session, ids)
                _pictures(session, archive, Attachment, [row for rows in attachments.values() for row in rows])
                for conv, character_uid in pairs:
                    lines(_conversation_entry(conv, character_uid, attachments[conv.id], messages[conv.id], people))
                counts.update(
                    conversations=len(pairs),
                    messages=sum(map(len, messages.values())),
                    attachments=sum(map(len, attachments.values())),
                )
        archive.put(USERS, _json([_user_entry(user) for user in people.values()]))
        counts.update(users=len(people), image_files=archive.pictures)
        me = people.get(actor.id)
        manifest = Manifest(
            format=FORMAT,
            version=VERSION,
            created=created,
            scope=Scope(everyone=everyone, user=_person(me) if me else Person(issuer="?", subject="?")),
            counts=dict(counts),
            files=archive.files,
        )
        archive.put(MANIFEST, manifest.model_dump_json(indent=2).encode(), checksum=False)
    return manifest


def _pictures(session: Session, archive: _ZipWriter, kind: type[SheetImage | Attachment], rows: Sequence[Any]) -> None:
    """Each picture and thumbnail of these rows not yet in the zip, its full bytes read once."""
    archive.thumbnails(rows)
    wanted: dict[str, int] = {}
    for row in rows:
        if _file(row) not in archive.files:
            wanted.setdefault(_file(row), row.id)
    todo = list(wanted.items())
    for start in range(0, len(todo), 16):  # a few full pictures in memory at a time
        chunk = todo[start : start + 16]
        data = data_of(session, kind, [row_id for _, row_id in chunk])
        for name, row_id in chunk:
            if row_id in data:
                archive.put(name, data[row_id], compress=False)
                archive.pictures += 1


def _file(row: StoredImage) -> str:
    return f"images/{row.sha256}.{EXTENSIONS.get(row.mime_type, 'png')}"


def _thumbnail(row: StoredImage) -> str:
    return f"thumbnails/{hashlib.sha256(row.thumbnail).hexdigest()}.jpg"


def _picture_entry(row: StoredImage) -> dict[str, Any]:
    fields = ("original_name", "mime_type", "width", "height", "sha256")
    return {**{k: getattr(row, k) for k in fields}, "created_at": _when(row.created_at), "file": _file(row),
            "thumbnail": _thumbnail(row)}  # fmt: skip


def _character_entry(character: Character, sheets: Sequence[SheetImage], people: dict[int, User]) -> dict[str, Any]:
    return {
        "uid": character.uid,
        "owner": _owner(people, character.owner_id),
        "shared": character.shared,
        "created_at": _when(character.created_at),
        "updated_at": _when(character.updated_at),
        "profile": {name: getattr(character, name) for name in Profile.model_fields},
        "images": [{**_picture_entry(row), "position": row.position} for row in sheets],
    }


def _conversation_entry(
    conv: Conversation, character_uid: str, attachments: Sequence[Attachment], messages: Sequence[Any], people: dict
) -> dict[str, Any]:
    keys = {row.id for row in attachments}
    return {
        "uid": conv.uid,
        "character_uid": character_uid,
        "owner": _owner(people, conv.owner_id),
        "title": conv.title,
        "settings": conv.settings,
        "created_at": _when(conv.created_at),
        "updated_at": _when(conv.updated_at),
        "attachments": [{**_picture_entry(row), "key": row.id} for row in attachments],
        "messages": [
            {
                **{k: getattr(m, k) for k in ("turn", "variant", "chosen", "role", "text", "status", "error", "stats")},
                "created_at": _when(m.created_at),
                "updated_at": _when(m.updated_at),
                "attachments": [i for i in m.attachment_ids if i in keys],  # one deleted since: left out
            }
            for m in messages
        ],
    }


def _person(user: User) -> Person:
    return Person(issuer=user.issuer, subject=user.subject, email=user.email, name=user.name)


def _owner(people: dict[int, User], user_id: int) -> dict[str, str]:
    user = people.get(user_id)
    return _person(user).model_dump() if user else {"issuer": "?", "subject": str(user_id)}


def _user_entry(user: User) -> dict[str, Any]:
    return {**_person(user).model_dump(), "persona_name": user.persona_name,
            "persona_description": user.persona_description, "first_seen": _when(user.first_seen),
            "last_seen": _when(user.last_seen)}  # fmt: skip


def _when(value: datetime) -> str:
    return as_utc(value).isoformat()


def _json(value: Any) -> bytes:
    return dumps(value, compact=True).encode()


class _ZipWriter:
    """A zip written member by member, recording each member's sha256 and size for the manifest."""

    def __init__(self, out: IO[bytes], created: datetime) -> None:
        self.zip = zipfile.ZipFile(out, "w", allowZip64=True)
        self.date = created.timetuple()[:6]
        self.files: dict[str, FileEntry] = {}
        self.pictures = 0

    def __enter__(self) -> _ZipWriter:
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
            if _thumbnail(row) not in self.files:
                self.put(_thumbnail(row), row.thumbnail, compress=False)

    @contextmanager
    def spooled(self, name: str) -> Iterator[Any]:
        """A JSON Lines member: lines are kept aside (in memory, on disk past 16 MB) while pictures
        are written, then copied into the zip in one piece."""
        digest, size = hashlib.sha256(), 0
        with tempfile.SpooledTemporaryFile(max_size=16 * 2**20) as spool:

            def line(value: Any) -> None:
                nonlocal size
                data = _json(value) + b"\n"
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


def restore(db: Engine, actor: Actor, raw: bytes, name: str, *, everyone: bool = False) -> RestoreReport:
    """Add what the backup holds and the library lacks, in one transaction: all of it or, on any
    error, nothing. Raises `BackupError` or `ArchiveError` (a damaged file) before writing anything.
    `everyone`: rows go back to their owners (the operator's command); otherwise they become the
    actor's, and a whole-server backup is refused (it holds other people's conversations)."""
    contents = read_backup(raw, name)
    if contents.manifest.scope.everyone and not everyone:
        raise BackupError("whole_server", name=name)
    with access.writing(db) as session:
        return _Restore(session, actor, contents, everyone).run()


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


class _Restore:
    """One restore inside one transaction: owners found or added, rows inserted in batches."""

    def __init__(self, session: Session, actor: Actor, contents: Contents, everyone: bool) -> None:
        self.session, self.actor, self.contents, self.everyone = session, actor, contents, everyone
        self.counts: Counter[str] = Counter()
        self.owner_ids: dict[tuple[str, str], int] = {LOCAL: LOCAL_USER_ID}
        self.entries = {user.key: user for user in contents.users}

    def run(self) -> RestoreReport:
        self._personas()
        characters = self._characters()
        self._conversations(characters)
        return RestoreReport(**{f: self.counts[f] for f in RestoreReport.__dataclass_fields__})

    def owner(self, person: Person) -> int:
        """The restorer, unless the operator restores the whole server: then the person, found by
        identity or added."""
        if not self.everyone:
            return self.actor.id
        if person.key not in self.owner_ids:
            user = store.user_by_identity(self.session, *person.key)
            if user is None:
                entry = self.entries.get(person.key)
                extra = (
                    entry.model_dump(exclude={"issuer", "subject", "email", "name"}, exclude_none=True) if entry else {}
                )
                user = User(issuer=person.issuer, subject=person.subject, email=person.email, name=person.name, **extra)
                store.add(self.session, [user])
                self.counts["users_added"] += 1
            self.owner_ids[person.key] = user.id
        return self.owner_ids[person.key]

    def _personas(self) -> None:
        """A persona fills an empty one: the whole server's every person's, anyone else's their own."""
        if self.everyone:
            pairs = [(self.owner(entry), entry) for entry in self.contents.users]
        else:
            own = self.entries.get(self.contents.manifest.scope.user.key)
            pairs = [(self.actor.id, own)] if own else []
        for user_id, entry in pairs:
            user = self.session.get(User, user_id)
            if user is not None and not (user.persona_name or user.persona_description):
                user.persona_name, user.persona_description = entry.persona_name, entry.persona_description
                self.session.add(user)

    def _characters(self) -> dict[str, int]:
        """Add the characters not here yet; returns every character id a conversation may attach to."""
        entries, contents = self.contents.characters, self.contents
        wanted = {c.uid for c in entries} | {c.character_uid for c in contents.conversations}
        existing = store.characters_by_uid(self.session, wanted)  # skipped, whoever's they are
        seen = None if self.everyone else access.characters_seen(self.actor)
        ids = {uid: row.id for uid, row in store.characters_by_uid(self.session, wanted, seen).items()}
        new = [entry for entry in entries if entry.uid not in existing]
        self.counts["characters_skipped"] = len(entries) - len(new)
        for start in range(0, len(new), BATCH):
            batch = new[start : start + BATCH]
            rows = [self._character(entry) for entry in batch]
            store.add(self.session, rows)
            pairs = [(row.id, image) for row, entry in zip(rows, batch, strict=True) for image in entry.images]
            self._pictures(SheetImage, [(i, {"character_id": c, "position": i.position}) for c, i in pairs])
            ids.update({row.uid: row.id for row in rows})
            self.counts["characters_added"] += len(rows)
        return ids

    def _conversations(self, characters: dict[str, int]) -> None:
        entries = self.contents.conversations
        here = store.conversation_uids(self.session, [c.uid for c in entries])
        new = [entry for entry in entries if entry.uid not in here]
        self.counts["conversations_skipped"] = len(entries) - len(new)
        attachable = [entry for entry in new if entry.character_uid in characters]
        self.counts["conversations_unattached"] = len(new) - len(attachable)
        for start in range(0, len(attachable), BATCH):
            batch = attachable[start : start + BATCH]
            rows = [self._conversation(entry, characters[entry.character_uid]) for entry in batch]
            store.add(self.session, rows)
            pairs = [(row.id, a) for row, entry in zip(rows, batch, strict=True) for a in entry.attachments]
            stored = self._pictures(Attachment, [(a, {"conversation_id": c}) for c, a in pairs])
            new_ids = {(c, a.key): row.id for (c, a), row in zip(pairs, stored, strict=True)}
            messages = [
                {**m.model_dump(exclude={"attachments"}), "role": str(m.role), "status": str(m.status),
                 "conversation_id": row.id, "attachment_ids": [new_ids[(row.id, key)] for key in m.attachments]}
                for row, entry in zip(rows, batch, strict=True)
                for m in entry.messages
            ]  # fmt: skip
            store.add_messages(self.session, messages)
            self.counts["conversations_added"] += len(rows)
            self.counts["messages_added"] += len(messages)

    def _character(self, entry: CharacterEntry) -> Character:
        times = {"created_at": entry.created_at, "updated_at": entry.updated_at}
        owner = self.owner(entry.owner)
        return Character(**entry.profile.model_dump(), uid=entry.uid, owner_id=owner, shared=entry.shared, **times)

    def _conversation(self, entry: ConversationEntry, character_id: int) -> Conversation:
        values = entry.model_dump(include={"uid", "title", "settings", "created_at", "updated_at"})
        return Conversation(**values, character_id=character_id, owner_id=self.owner(entry.owner))

    def _pictures(self, kind: type[Any], entries: Sequence[tuple[PictureEntry, dict[str, Any]]]) -> list[Any]:
        """Rows of `kind` for these pictures (with their keys), stored with their full bytes."""
        names = {"original_name", "mime_type", "width", "height", "sha256", "created_at"}
        files = self.contents.files
        rows = [kind(**e.model_dump(include=names), thumbnail=files[e.thumbnail], **keys) for e, keys in entries]
        store.add_images(self.session, kind, rows, [files[e.file] for e, _ in entries])
        self.counts["images_added"] += len(rows)
        return rows
