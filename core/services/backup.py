"""Library backup and restore: one zip with everything, read back into any library without duplicates.

The file itself (its members, rows and checks) is `core.formats.backup`. Here: which rows go in, and
how a restore stores them. Characters and conversations are known by their uid: one already in the
library is skipped (a skipped character still receives the backup's new conversations with it), so
restoring twice adds nothing the second time. The database numbers every new row itself, so a backup
from SQLite restores into PostgreSQL and back. Everything is written in one transaction, after every
check has passed.

Scope: in the app everyone, admins included, backs up their own characters and their own
conversations (those with someone else's shared character carry only that character's uid), and
what they restore becomes theirs; nobody's backup holds another person's conversations. The
whole server (every person's rows, restored to their owners, known by issuer and subject) is
backed up and restored only by the operator, on the server (`python -m core.services.server_backup`),
where the database is readable anyway. The app refuses to restore such a backup.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.formats import backup as fmt
from core.formats.backup import MAX_UPLOAD_MB as MAX_UPLOAD_MB  # the uploader's limit
from core.formats.backup import BackupError as BackupError
from core.services import access
from core.services.access import Actor
from storage import backup as store
from storage.images import data_of
from storage.tables import (
    LOCAL_USER_ID,
    Attachment,
    Character,
    CharacterFields,
    Conversation,
    ConversationFields,
    PictureFacts,
    SheetImage,
    User,
    utcnow,
)

LOCAL = ("local", "local")  # the local user's identity (migration 0002), always id LOCAL_USER_ID
BATCH = 100


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


# -- backup ----------------------------------------------------------------------------------------
def backup(db: Engine, actor: Actor) -> bytes:
    """The actor's own library as one zip file."""
    out = io.BytesIO()
    write_backup(db, actor, out)
    return out.getvalue()


def file_name(when: datetime | None = None) -> str:
    return f"refsheet-backup-{(when or utcnow()).strftime('%Y-%m-%d')}.zip"


def write_backup(db: Engine, actor: Actor, out: BinaryIO, *, everyone: bool = False) -> fmt.Manifest:
    """Write the backup to `out`, a batch of rows at a time: pictures go straight into the zip, each
    once; rows are spooled (to disk past a few MB) and added after them with the manifest.
    `everyone`: the whole server (the operator's command only; never reachable from a page)."""
    created = utcnow()
    characters = None if everyone else access.characters_owned(actor)
    conversations = None if everyone else access.conversations_seen(actor)
    counts: Counter[str] = Counter()
    with Session(db) as session, fmt.ZipWriter(out, created) as archive:
        people = store.users(session, None if everyone else [actor.id])
        with archive.spooled(fmt.CHARACTERS) as lines:
            for batch in store.characters(session, characters, BATCH):
                sheets = store.images_of(session, SheetImage, [c.id for c in batch])
                _pictures(session, archive, SheetImage, [row for rows in sheets.values() for row in rows])
                for character in batch:
                    lines(fmt.character_entry(character, sheets[character.id], people))
                counts.update(characters=len(batch), sheet_images=sum(map(len, sheets.values())))
        with archive.spooled(fmt.CONVERSATIONS) as lines:
            for pairs in store.conversations(session, conversations, BATCH):
                ids = [conv.id for conv, _ in pairs]
                attachments, messages = store.images_of(session, Attachment, ids), store.messages_of(session, ids)
                _pictures(session, archive, Attachment, [row for rows in attachments.values() for row in rows])
                for conv, character_uid in pairs:
                    lines(fmt.conversation_entry(conv, character_uid, attachments[conv.id], messages[conv.id], people))
                counts.update(
                    conversations=len(pairs),
                    messages=sum(map(len, messages.values())),
                    attachments=sum(map(len, attachments.values())),
                )
        archive.put(fmt.USERS, fmt.json_bytes([fmt.user_entry(user) for user in people.values()]))
        counts.update(users=len(people), image_files=archive.pictures)
        me = people.get(actor.id)
        manifest = fmt.Manifest(
            format=fmt.FORMAT,
            version=fmt.VERSION,
            created=created,
            scope=fmt.Scope(everyone=everyone, user=fmt.person_of(me) if me else fmt.Person(issuer="?", subject="?")),
            counts=dict(counts),
            files=archive.files,
        )
        archive.put(fmt.MANIFEST, manifest.model_dump_json(indent=2).encode(), checksum=False)
    return manifest


def _pictures(
    session: Session, archive: fmt.ZipWriter, kind: type[SheetImage | Attachment], rows: Sequence[Any]
) -> None:
    """Each picture and thumbnail of these rows not yet in the zip, its full bytes read once."""
    archive.thumbnails(rows)
    wanted: dict[str, int] = {}
    for row in rows:
        if fmt.picture_file(row) not in archive.files:
            wanted.setdefault(fmt.picture_file(row), row.id)
    todo = list(wanted.items())
    for start in range(0, len(todo), 16):  # a few full pictures in memory at a time
        chunk = todo[start : start + 16]
        data = data_of(session, kind, [row_id for _, row_id in chunk])
        for name, row_id in chunk:
            if row_id in data:
                archive.put(name, data[row_id], compress=False)
                archive.pictures += 1


def restore(db: Engine, actor: Actor, raw: bytes, name: str, *, everyone: bool = False) -> RestoreReport:
    """Add what the backup holds and the library lacks, in one transaction: all of it or, on any
    error, nothing. Raises `fmt.BackupError` or `ArchiveError` (a damaged file) before writing anything.
    `everyone`: rows go back to their owners (the operator's command); otherwise they become the
    actor's, and a whole-server backup is refused (it holds other people's conversations)."""
    contents = fmt.read_backup(raw, name)
    if contents.manifest.scope.everyone and not everyone:
        raise fmt.BackupError("whole_server", name=name)
    with access.writing(db) as session:
        return _Restore(session, actor, contents, everyone).run()


class _Restore:
    """One restore inside one transaction: owners found or added, rows inserted in batches."""

    def __init__(self, session: Session, actor: Actor, contents: fmt.Contents, everyone: bool) -> None:
        self.session, self.actor, self.contents, self.everyone = session, actor, contents, everyone
        self.counts: Counter[str] = Counter()
        self.owner_ids: dict[tuple[str, str], int] = {LOCAL: LOCAL_USER_ID}
        self.entries = {user.key: user for user in contents.users}

    def run(self) -> RestoreReport:
        self._personas()
        characters = self._characters()
        self._conversations(characters)
        return RestoreReport(**{f: self.counts[f] for f in RestoreReport.__dataclass_fields__})

    def owner(self, person: fmt.Person) -> int:
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
        """A persona fills an empty one, and an interface language one not chosen yet: the whole server's
        every person's, anyone else's their own."""
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
            if user is not None and not user.ui_language:  # likewise the interface language they chose
                user.ui_language = entry.ui_language
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

    def _character(self, entry: fmt.CharacterEntry) -> Character:
        values = entry.model_dump(include=set(CharacterFields.model_fields))
        return Character(**entry.profile.model_dump(), **values, owner_id=self.owner(entry.owner))

    def _conversation(self, entry: fmt.ConversationEntry, character_id: int) -> Conversation:
        values = entry.model_dump(include=set(ConversationFields.model_fields))
        return Conversation(**values, character_id=character_id, owner_id=self.owner(entry.owner))

    def _pictures(self, kind: type[Any], entries: Sequence[tuple[fmt.PictureEntry, dict[str, Any]]]) -> list[Any]:
        """Rows of `kind` for these pictures (with their keys), stored with their full bytes."""
        names = set(PictureFacts.model_fields)
        files = self.contents.files
        rows = [kind(**e.model_dump(include=names), thumbnail=files[e.thumbnail], **keys) for e, keys in entries]
        store.add_images(self.session, kind, rows, [files[e.file] for e, _ in entries])
        self.counts["images_added"] += len(rows)
        return rows
