"""Turns of a conversation, end to end in plain Python: storage → request → backend → storage.

The path of a message: `send` commits the user's words (and validated images) → `reply` builds
the `ReplyRequest` (character prefix, the chosen story so far, reply settings) and creates the reply
row, marked *writing*, before the first token → iterating the `ReplyRun` streams from the backend and
saves the text as it grows → the row ends complete, partial (stopped, or the page went away) or
error. While it streams the writer renews its claim on the row every few seconds; a row whose
writer died (a killed server) stops being renewed and reads as unfinished, with its text kept.
Regenerate, edit-and-resend and "get a reply" are the same `reply` with a different starting point.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.base.errors import NotFound, UserError
from core.base.i18n import Text, known
from core.base.sheets import Picture, PreparedImage
from core.base.text import clean_text
from core.model.backend import GenerationStats, OnProgress, Replier, ReplyRequest, ReplyStream
from core.model.prompts import Turn
from core.services import access
from core.services.characters import character_prefix
from core.services.conversations import sampler
from core.services.users import Actor
from storage import conversations as convs
from storage.tables import Message, MessageStatus, Role, as_utc

FLUSH_SECONDS = 1.0
FLUSH_CHUNKS = 16
CLAIM_SECONDS = 3.0  # a writer renews its claim on the reply row at least this often…
CLAIM_LEASE = timedelta(seconds=12)  # …and a claim not renewed for this long was a writer that died
TITLE_LENGTH = 48


@dataclass(frozen=True)
class Bubble:
    """One message as the conversation shows it: the chosen alternative of its turn."""

    id: int
    turn: int
    role: str
    text: str
    status: str
    error: Text | None = None  # why it failed, to show in the viewer's language
    variant: int = 0
    variants: int = 1  # how many alternatives the turn has (the ‹ 2/3 › pager)
    stats: dict[str, Any] = field(default_factory=dict)
    attachments: tuple[bytes, ...] = field(default=(), repr=False)  # thumbnails
    updated_at: datetime | None = None

    @property
    def is_user(self) -> bool:
        return self.role == Role.USER

    @property
    def being_written(self) -> bool:
        """Streaming right now (in another tab, or for another viewer of the conversation)."""
        return self.status == MessageStatus.WRITING and not _claim_expired(self.updated_at)

    @property
    def unfinished(self) -> bool:
        """Stopped, or its writer died: the text so far is all there is."""
        return self.status == MessageStatus.PARTIAL or (self.status == MessageStatus.WRITING and not self.being_written)


def _claim_expired(updated_at: datetime | None) -> bool:
    if updated_at is None:
        return True
    return datetime.now(UTC) - as_utc(updated_at) > CLAIM_LEASE


def stored_error(exc: BaseException) -> str:
    """What a failed reply row keeps: the error's code and parameters, translated only when shown."""
    text = (
        exc.text if isinstance(exc, UserError) else Text("chat.error.other", {"reason": str(exc) or type(exc).__name__})
    )
    return json.dumps(text.to_dict(), ensure_ascii=False)


def error_of(stored: str) -> Text | None:
    """The reason a row keeps; rows written before codes were stored hold the sentence itself. What
    a row holds may come from a restored backup, so only a known key with plain parameters is taken
    as one; anything else is shown as the text it is."""
    if not stored:
        return None
    try:
        data = json.loads(stored)
        key, params = data["key"], data.get("params") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return Text("chat.error.other", {"reason": stored})
    if not (isinstance(key, str) and known(key) and isinstance(params, dict)):
        return Text("chat.error.other", {"reason": stored})
    plain = (str, int, float)
    return Text(
        key, {str(k): v if isinstance(v, plain) and not isinstance(v, bool) else str(v) for k, v in params.items()}
    )


# -- reading ---------------------------------------------------------------------------------------
def story(db: Engine, actor: Actor, conversation_id: int, last: int | None = None) -> list[Bubble]:
    """The conversation as shown: the chosen message of each turn, in order, with attachment
    thumbnails; with `last`, only the latest `last` messages (what a page shows)."""
    with Session(db) as session:
        access.conversation(session, actor, conversation_id)
        messages = convs.list_messages(session, conversation_id, last)
        counts = convs.variant_counts(session, conversation_id, messages[0].turn if messages else 0)
        return [_bubble(session, m, counts.get(m.turn, 1)) for m in messages]


def message(db: Engine, actor: Actor, conversation_id: int, message_id: int) -> Bubble:
    """One message as it is now (a reply another viewer is writing, re-read to follow it)."""
    with Session(db) as session:
        access.conversation(session, actor, conversation_id)
        row = convs.get_message(session, message_id)
        if row is None or row.conversation_id != conversation_id:
            raise NotFound("message", id=message_id)
        return _bubble(session, row, len(convs.variants(session, conversation_id, row.turn)))


def _bubble(session: Session, m: Message, variants: int) -> Bubble:
    thumbnails = tuple(a.thumbnail for a in convs.get_attachments(session, m))
    return Bubble(m.id, m.turn, m.role, m.text, m.status, error_of(m.error), m.variant, variants, dict(m.stats),
                  thumbnails, m.updated_at)  # fmt: skip


def awaiting_reply(bubbles: Sequence[Bubble]) -> bool:
    """The character has not answered the last message (or not greeted yet)."""
    return not bubbles or bubbles[-1].is_user


def request_for(db: Engine, actor: Actor, conversation_id: int, before_turn: int | None = None) -> ReplyRequest:
    """What the backend is asked: the character prefix and the story up to `before_turn` (exclusive)."""
    with Session(db) as session:
        return _request(session, actor, conversation_id, before_turn)


def _request(session: Session, actor: Actor, conversation_id: int, before_turn: int | None) -> ReplyRequest:
    conversation = access.conversation(session, actor, conversation_id)
    character = access.character(session, actor, conversation.character_id)
    history = []
    for m in convs.list_messages(session, conversation_id):
        if before_turn is not None and m.turn >= before_turn:
            break
        if m.status == MessageStatus.ERROR and not m.text:
            continue
        images = tuple(Picture.of(picture) for picture in convs.attachment_pictures(session, m))
        history.append(Turn(m.role, m.text, images))
    return ReplyRequest(
        prefix=character_prefix(session, character, actor),
        history=tuple(history),
        sampler=sampler(conversation),
        conversation_key=f"conversation:{conversation_id}",
    )


# -- changing the story ----------------------------------------------------------------------------
def send(db: Engine, actor: Actor, conversation_id: int, text: str, images: Sequence[PreparedImage] = ()) -> int:
    """Store the user's message with its images (already validated); returns its turn.

    A conversation without a title takes the first line of its first message."""
    with access.writing(db) as session:
        conversation = access.conversation(session, actor, conversation_id, write=True)
        ids = [convs.add_attachment(session, conversation_id, image).id for image in images]
        text = clean_text(text)
        message = convs.append_message(session, conversation_id, Role.USER, text, attachment_ids=ids)
        if not conversation.title and text.strip():
            first_line = text.strip().splitlines()[0]
            title = first_line if len(first_line) <= TITLE_LENGTH else first_line[: TITLE_LENGTH - 1] + "…"
            convs.rename_conversation(session, conversation_id, title)
        return message.turn


def edit(db: Engine, actor: Actor, conversation_id: int, turn: int, text: str) -> None:
    """Change a message and drop everything after it: the story continues from the new words."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        chosen = next((m for m in convs.variants(session, conversation_id, turn) if m.chosen), None)
        if chosen is None:
            raise NotFound("message", id=turn)
        convs.update_message(session, chosen.id, text=clean_text(text))
        convs.delete_after(session, conversation_id, turn)


def delete(db: Engine, actor: Actor, conversation_id: int, turn: int) -> None:
    """Delete one message with all its alternatives."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        convs.delete_turn(session, conversation_id, turn)


def choose(db: Engine, actor: Actor, conversation_id: int, turn: int, variant: int) -> None:
    """Make one alternative the reply the story continues from."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        try:
            convs.choose_variant(session, conversation_id, turn, variant)
        except LookupError as exc:
            raise NotFound("message", id=turn) from exc


# -- replying --------------------------------------------------------------------------------------
def reply(
    db: Engine,
    actor: Actor,
    backend: Replier,
    conversation_id: int,
    *,
    regenerate_turn: int | None = None,
    continue_turn: int | None = None,
    stop: threading.Event | None = None,
    on_progress: OnProgress | None = None,
) -> ReplyRun:
    """Start the character's reply: a new turn, a new alternative of `regenerate_turn`, or more of the
    unfinished reply of `continue_turn` (cut off by Stop or a server that died), from its last word.

    The reply row exists (writing) when this returns; iterate the result to stream the text.
    `on_progress` hears what the reply waits for (the queue, pictures, thinking), on this thread."""
    if continue_turn is not None:
        return _continue(db, actor, backend, conversation_id, continue_turn, stop, on_progress)
    with access.writing(db) as session:
        request = _request(session, actor, conversation_id, regenerate_turn)
        if regenerate_turn is None:
            row = convs.append_message(session, conversation_id, Role.ASSISTANT, "", status=MessageStatus.WRITING)
        else:
            try:
                row = convs.add_variant(session, conversation_id, regenerate_turn, "", MessageStatus.WRITING)
            except LookupError as exc:  # the message was deleted in another tab
                raise NotFound("message", id=regenerate_turn) from exc
        message_id, turn = row.id, row.turn
    return ReplyRun(db, message_id, turn, lambda progress: backend.stream(request, stop, progress), on_progress)


def _continue(
    db: Engine,
    actor: Actor,
    backend: Replier,
    conversation_id: int,
    turn: int,
    stop: threading.Event | None,
    on_progress: OnProgress | None,
) -> ReplyRun:
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        row = next((m for m in convs.variants(session, conversation_id, turn) if m.chosen), None)
        if row is None or row.role != Role.ASSISTANT:
            raise NotFound("message", id=turn)
        request = replace(_request(session, actor, conversation_id, turn), continuation=row.text)
        convs.update_message(session, row.id, status=MessageStatus.WRITING, error="")
        message_id, text = row.id, row.text
    start = lambda progress: backend.stream(request, stop, progress)  # noqa: E731
    return ReplyRun(db, message_id, turn, start, on_progress, so_far=text)


class ReplyRun:
    """A reply being written: iterate for its chunks while each is saved to its row.

    Saved every FLUSH_SECONDS or FLUSH_CHUNKS chunks, and the claim renewed at least every
    CLAIM_SECONDS while the backend is still busy before the first token; at the end the row is
    complete, or partial (stopped, abandoned) or error (failed), always with the text so far and
    the stats. `start` opens the backend's stream with the run's own progress hook."""

    def __init__(
        self,
        db: Engine,
        message_id: int,
        turn: int,
        start: Callable[[OnProgress], ReplyStream],
        on_progress: OnProgress | None = None,
        so_far: str = "",
    ) -> None:
        self.db, self.message_id, self.turn = db, message_id, turn
        self._on_progress = on_progress
        self._so_far = so_far
        self._text: list[str] = [so_far] if so_far else []  # a continued reply keeps what it had
        self._claimed = time.monotonic()
        self.stream = start(self._progress)
        self._chunks = self._save_as_it_streams()

    def _progress(self, phase: Text) -> None:
        if time.monotonic() - self._claimed >= CLAIM_SECONDS:
            self._save("".join(self._text), MessageStatus.WRITING, "")
        if self._on_progress is not None:
            self._on_progress(phase)

    @property
    def stats(self) -> GenerationStats:
        return self.stream.stats

    @property
    def so_far(self) -> str:
        """The text the reply had before this run (a continued reply's start), empty for a new one."""
        return self._so_far

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    def _save_as_it_streams(self) -> Iterator[str]:
        text = self._text
        pending = 0
        outcome, error = MessageStatus.PARTIAL, ""
        try:
            for chunk in self.stream:
                text.append(chunk)
                pending += 1
                yield chunk
                if pending >= FLUSH_CHUNKS or time.monotonic() - self._claimed >= FLUSH_SECONDS:
                    self._save("".join(text), MessageStatus.WRITING, "")
                    pending = 0
            outcome = MessageStatus.PARTIAL if self.stats.stopped else MessageStatus.COMPLETE
        except GeneratorExit:  # the page went away mid-reply (Stop, a rerun): keep what was said
            outcome = MessageStatus.PARTIAL
            raise
        except Exception as exc:
            outcome = MessageStatus.PARTIAL if text else MessageStatus.ERROR
            error = stored_error(exc)  # a code and parameters: each viewer reads it in their language
            raise
        finally:
            self.stream.close()
            if outcome == MessageStatus.PARTIAL and not error:
                self.stats.stopped = True
            self._save("".join(text), outcome, error)

    def _save(self, text: str, status: str, error: str) -> None:
        self._claimed = time.monotonic()
        try:
            with access.writing(self.db) as session:
                convs.update_message(
                    session, self.message_id, text=text, status=status, error=error, stats=self.stats.to_dict()
                )
        except convs.ConversationGone:
            pass  # deleted in another tab while it streamed: nothing left to save into
