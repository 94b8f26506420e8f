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

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.base.errors import Changed, NotFound, UserError
from core.base.i18n import Text, known
from core.base.sheets import Picture, PreparedImage
from core.base.text import clean_text
from core.model.backend import GenerationStats, OnProgress, Replier, ReplyRequest, ReplyStream
from core.model.prompts import Turn
from core.services import access
from core.services.access import Actor
from core.services.prompting import character_prefix, names, reply_settings
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
    hidden: bool = False  # kept and shown (dimmed), left out of what the model reads
    speaker: str = ""  # the name an imported chat gives the line ("": the user or the character)

    @property
    def is_user(self) -> bool:
        return self.role == Role.USER

    @property
    def is_reply(self) -> bool:
        """The character's line (or, in an imported group chat, another speaker's)."""
        return self.role == Role.ASSISTANT

    @property
    def is_narrator(self) -> bool:
        """A narrator line (SillyTavern's `/sys`): neither the user's nor the character's."""
        return self.role == Role.NARRATOR

    @property
    def being_written(self) -> bool:
        """Streaming right now (in another tab, or for another viewer of the conversation)."""
        return self.status == MessageStatus.WRITING and not _claim_expired(self.updated_at)

    @property
    def unfinished(self) -> bool:
        """Stopped, or its writer died: the text so far is all there is."""
        dead = self.status == MessageStatus.WRITING and not self.being_written and not self.orphaned
        return self.status == MessageStatus.PARTIAL or dead

    @property
    def orphaned(self) -> bool:
        """A row kept for a reply (`send`) that no writer took up within the lease (the page went
        away first): no reply at all. The message before it waits for one, and the next reply is
        written into this row."""
        kept = self.role == Role.ASSISTANT and self.status == MessageStatus.WRITING and not self.text and not self.stats
        return kept and _claim_expired(self.updated_at)


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


@dataclass(frozen=True)
class Seen:
    """The last message a page showed: its turn and id. An action taken from that page carries it,
    and is refused when the conversation has moved on since (another window, another replica): a
    stale Regenerate would otherwise make an earlier reply the chosen one under later turns."""

    turn: int
    message_id: int

    @classmethod
    def of(cls, bubbles: Sequence[Bubble]) -> Seen:
        return cls(bubbles[-1].turn, bubbles[-1].id) if bubbles else EMPTY


EMPTY = Seen(-1, 0)  # a conversation with no message yet


@dataclass(frozen=True)
class Sent:
    """A message just stored: its id and turn, whether the conversation had moved on since the page
    drew it (the message is kept all the same, after what others added), and the row kept for its
    reply, when one was asked for (`reply` writes into it; `abandon` lets it go)."""

    id: int
    turn: int
    moved_on: bool = False
    reply_id: int | None = None


def _moved_on(session: Session, conversation_id: int, seen: Seen | None) -> bool:
    if seen is None:  # not asked to check (the follow-up of an action already checked)
        return False
    latest = convs.latest_message(session, conversation_id)
    return (Seen(latest.turn, latest.id) if latest else EMPTY) != seen


def _check_seen(session: Session, conversation_id: int, seen: Seen | None) -> None:
    if _moved_on(session, conversation_id, seen):
        raise Changed("conversation")


# -- reading ---------------------------------------------------------------------------------------
def story(db: Engine, actor: Actor, conversation_id: int, last: int | None = None) -> list[Bubble]:
    """The conversation as shown: the chosen message of each turn, in order, with attachment
    thumbnails; with `last`, only the latest `last` messages (what a page shows)."""
    with Session(db) as session:
        filled = _names(session, actor, conversation_id)
        messages = convs.list_messages(session, conversation_id, last)
        counts = convs.variant_counts(session, conversation_id, messages[0].turn if messages else 0)
        return [_bubble(session, m, counts.get(m.turn, 1), filled) for m in messages]


def message(db: Engine, actor: Actor, conversation_id: int, message_id: int) -> Bubble:
    """One message as it is now (a reply another viewer is writing, re-read to follow it)."""
    with Session(db) as session:
        filled = _names(session, actor, conversation_id)
        row = convs.get_message(session, message_id)
        if row is None or row.conversation_id != conversation_id:
            raise NotFound("message", id=message_id)
        return _bubble(session, row, len(convs.variants(session, conversation_id, row.turn)), filled)


def seen_now(db: Engine, actor: Actor, conversation_id: int) -> Seen:
    """The conversation's last message as it is now (one indexed read): a page that showed another
    one is behind, and redraws."""
    with Session(db) as session:
        access.conversation(session, actor, conversation_id)
        latest = convs.latest_message(session, conversation_id)
        return Seen(latest.turn, latest.id) if latest else EMPTY


def _names(session: Session, actor: Actor, conversation_id: int) -> Callable[[str], str]:
    """The conversation's macros filler (`{{user}}`, `{{char}}`), after the access check."""
    conversation = access.conversation(session, actor, conversation_id)
    return names(access.character(session, actor, conversation.character_id), actor)


def _bubble(session: Session, m: Message, variants: int, filled: Callable[[str], str]) -> Bubble:
    thumbnails = tuple(a.thumbnail for a in convs.get_attachments(session, m))
    return Bubble(m.id, m.turn, m.role, filled(m.text), m.status, error_of(m.error), m.variant, variants,
                  dict(m.stats), thumbnails, m.updated_at, m.hidden, m.speaker)  # fmt: skip


def awaiting_reply(bubbles: Sequence[Bubble]) -> bool:
    """The character has not answered the last message, the user's or the narrator's (or not greeted
    yet), or its reply was never begun (`Bubble.orphaned`)."""
    return not bubbles or bubbles[-1].role != Role.ASSISTANT or bubbles[-1].orphaned


def request_for(db: Engine, actor: Actor, conversation_id: int, before_turn: int | None = None) -> ReplyRequest:
    """What the backend is asked: the character prefix and the story up to `before_turn` (exclusive)."""
    with Session(db) as session:
        return _request(session, actor, conversation_id, before_turn)


def _request(session: Session, actor: Actor, conversation_id: int, before_turn: int | None) -> ReplyRequest:
    conversation = access.conversation(session, actor, conversation_id)
    character = access.character(session, actor, conversation.character_id)
    filled = names(character, actor)
    history = []
    story = convs.list_messages(session, conversation_id)
    for m in story:
        if before_turn is not None and m.turn >= before_turn:
            break
        if m.hidden or (not m.text and not m.attachment_ids):
            continue  # hidden from the model (as SillyTavern leaves `is_system` lines out), or empty
        images = tuple(Picture.of(picture) for picture in convs.attachment_pictures(session, m))
        role, text = m.role, filled(m.text)
        if role == Role.NARRATOR:  # SillyTavern sends `/sys` lines in place, as system (not a speaker's) text
            role, text = Role.USER, f"(Narration: {text})" if text.strip() else ""
        elif role == Role.ASSISTANT and m.speaker:  # another speaker of an imported group chat: the
            role, text = Role.USER, f"{m.speaker}: {text}"  # character's own lines have none (decided on import)
        history.append(Turn(role, text, images))
    return ReplyRequest(
        prefix=character_prefix(session, character, actor),
        history=tuple(history),
        sampler=reply_settings(conversation),
        conversation_key=f"conversation:{conversation_id}",
    )


# -- changing the story ----------------------------------------------------------------------------
def send(
    db: Engine,
    actor: Actor,
    conversation_id: int,
    text: str,
    images: Sequence[PreparedImage] = (),
    seen: Seen | None = None,
    keep_reply: bool = False,
) -> Sent:
    """Store the user's message with its images (already validated), after whatever the story holds
    now. `seen`: what the page showed; a message is never refused for it, but `moved_on` says the
    page was behind, so it can show the conversation as it is. `keep_reply`: keep the next turn for
    its reply in the same transaction, so two messages sent at once each get their reply right after
    them (user, reply, user, reply), whichever reply is written first.

    A conversation without a title takes the first line of its first message."""
    with access.writing(db) as session:
        conversation = access.conversation(session, actor, conversation_id, write=True)
        moved_on = _moved_on(session, conversation_id, seen)
        ids = [convs.add_attachment(session, conversation_id, image).id for image in images]
        text = clean_text(text)
        message = convs.append_message(session, conversation_id, Role.USER, text, attachment_ids=ids)
        if not conversation.title and text.strip():
            first_line = text.strip().splitlines()[0]
            title = first_line if len(first_line) <= TITLE_LENGTH else first_line[: TITLE_LENGTH - 1] + "…"
            convs.rename_conversation(session, conversation_id, title)
        reply_row = None
        if keep_reply:
            reply_row = convs.append_message(session, conversation_id, Role.ASSISTANT, "", status=MessageStatus.WRITING)
        return Sent(message.id, message.turn, moved_on, reply_row.id if reply_row else None)


def abandon(db: Engine, actor: Actor, conversation_id: int, message_id: int) -> None:
    """Let go of a reply row kept by `send` that nothing was written into (the model cannot serve):
    the message waits for its reply, as if none had been asked."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        row = convs.get_message(session, message_id)
        if row is not None and row.conversation_id == conversation_id and _kept_for_reply(row):
            convs.delete_chosen(session, conversation_id, row.turn)


def renew(db: Engine, actor: Actor, conversation_id: int, message_id: int) -> None:
    """Renew the claim on a reply row kept by `send` while its writer gets ready (the model loading),
    so other windows keep waiting for it instead of writing past it."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        row = convs.get_message(session, message_id)
        if row is not None and row.conversation_id == conversation_id and _kept_for_reply(row):
            convs.update_message(session, message_id, status=MessageStatus.WRITING)


def _kept_for_reply(row: Message) -> bool:
    return row.role == Role.ASSISTANT and row.status == MessageStatus.WRITING and not row.text and not row.stats


def _orphaned(row: Message) -> bool:
    """A kept row no writer took up within the lease (`Bubble.orphaned`)."""
    return _kept_for_reply(row) and _claim_expired(row.updated_at)


def _claim(session: Session, row: Message) -> None:
    """Take up a kept row for the reply about to be written: from now on it is that reply's (not
    abandoned, not taken up again), and its claim runs from now."""
    convs.update_message(session, row.id, stats=GenerationStats().to_dict())


def edit(db: Engine, actor: Actor, conversation_id: int, turn: int, text: str, seen: Seen | None = None) -> int | None:
    """Change a message: the story continues from the new words. The reply to the old words stays,
    as an alternative of the reply the new words get (‹ 1/2 ›), and what came after it goes. Returns
    that reply's turn, for the new reply to be written as its newest alternative, or None when the
    message had no reply yet (the new one is the next turn). Refused (`Changed`) when the
    conversation moved on since the page showed `seen`."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        _check_seen(session, conversation_id, seen)
        chosen = next((m for m in convs.variants(session, conversation_id, turn) if m.chosen), None)
        if chosen is None:
            raise NotFound("message", id=turn)
        convs.update_message(session, chosen.id, text=clean_text(text))
        following = convs.next_turn(session, conversation_id, turn)
        if following is None or following.role != Role.ASSISTANT or _orphaned(following):
            convs.delete_after(session, conversation_id, turn)
            return None
        convs.delete_after(session, conversation_id, following.turn)
        return following.turn


def delete(db: Engine, actor: Actor, conversation_id: int, turn: int, seen: Seen | None = None) -> None:
    """Delete the message shown for a turn: one alternative, the next one shown in its place; the
    turn itself goes with its last alternative. Refused (`Changed`) when the conversation moved on
    since the page showed `seen`."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        _check_seen(session, conversation_id, seen)
        if not convs.delete_chosen(session, conversation_id, turn):
            raise NotFound("message", id=turn)


def choose(db: Engine, actor: Actor, conversation_id: int, turn: int, variant: int, seen: Seen | None = None) -> None:
    """Make one alternative the reply the story continues from. Refused (`Changed`) when the
    conversation moved on since the page showed `seen` (the later turns answered another one)."""
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        _check_seen(session, conversation_id, seen)
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
    into: int | None = None,
    seen: Seen | None = None,
    stop: threading.Event | None = None,
    on_progress: OnProgress | None = None,
    waited_s: float = 0.0,
) -> ReplyRun:
    """Start the character's reply: a new turn, a new alternative of `regenerate_turn`, or more of the
    unfinished reply of `continue_turn` (cut off by Stop or a server that died), from its last word.
    `into`: the row `send` kept for the reply to the message just sent. `seen`: what the page showed;
    the reply is refused (`Changed`) when the conversation moved on since. `waited_s`: what the
    person already waited for this reply (the model loading), counted in its wait.

    The reply row exists (writing) when this returns; iterate the result to stream the text. One
    reply is written at a time in a conversation: a new one first waits for any reply being written
    before it, then reads the story up to itself. `on_progress` hears what the reply waits for (an
    earlier reply, the queue, pictures, thinking), on this thread."""
    stop = stop if stop is not None else threading.Event()  # the run's own: `ReplyRun.close` sets it
    if continue_turn is not None:
        return _continue(db, actor, backend, conversation_id, continue_turn, seen, stop, on_progress, waited_s)
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        _check_seen(session, conversation_id, seen)
        if regenerate_turn is not None:
            try:
                row = convs.add_variant(session, conversation_id, regenerate_turn, "", MessageStatus.WRITING)
            except LookupError as exc:  # the message was deleted in another tab
                raise NotFound("message", id=regenerate_turn) from exc
        elif into is not None:
            row = convs.get_message(session, into)
            if row is None or row.conversation_id != conversation_id or not _kept_for_reply(row):
                raise NotFound("message", id=into)
            _claim(session, row)
        elif (latest := convs.latest_message(session, conversation_id)) is not None and _orphaned(latest):
            row = latest  # the reply a page kept and never began: written here
            _claim(session, row)
        else:
            row = convs.append_message(session, conversation_id, Role.ASSISTANT, "", status=MessageStatus.WRITING)
        message_id = row.id

    def start(progress: OnProgress) -> ReplyStream:
        turn = _wait_for_earlier(db, conversation_id, message_id, progress)
        return backend.stream(request_for(db, actor, conversation_id, turn), stop, progress)

    return ReplyRun(db, message_id, row.turn, start, on_progress, waited_s=waited_s, stop=stop)


WAIT_POLL_SECONDS = 0.5


def _wait_for_earlier(db: Engine, conversation_id: int, message_id: int, progress: OnProgress) -> int:
    """Wait while a reply before this one is being written (its claim alive), saying so; then the
    reply's turn. The caller's progress hook renews this row's own claim meanwhile."""
    while True:
        with Session(db) as session:
            row = convs.get_message(session, message_id)
            if row is None:
                raise NotFound("message", id=message_id)
            if not convs.writing_before(session, conversation_id, row.turn, datetime.now(UTC) - CLAIM_LEASE):
                break
        progress(Text("progress.earlier_reply"))
        time.sleep(WAIT_POLL_SECONDS)
    _drop_orphans(db, conversation_id, row.turn)
    return row.turn


def _drop_orphans(db: Engine, conversation_id: int, turn: int) -> None:
    """Rows kept for replies that no writer took up (`Bubble.orphaned`: the server died before the
    reply began) before `turn`: no replies at all, gone once a later reply is written, so that none
    stays *writing* for ever. (One indexed read when there are none, as almost always.)"""
    with Session(db) as session:
        if not convs.writing_before(session, conversation_id, turn, datetime(1970, 1, 1, tzinfo=UTC)):
            return
    with access.writing(db) as session:
        for m in convs.list_messages(session, conversation_id):
            if m.turn < turn and _orphaned(m):
                convs.delete_chosen(session, conversation_id, m.turn)


def _continue(
    db: Engine,
    actor: Actor,
    backend: Replier,
    conversation_id: int,
    turn: int,
    seen: Seen | None,
    stop: threading.Event | None,
    on_progress: OnProgress | None,
    waited_s: float,
) -> ReplyRun:
    with access.writing(db) as session:
        access.conversation(session, actor, conversation_id, write=True)
        _check_seen(session, conversation_id, seen)
        row = next((m for m in convs.variants(session, conversation_id, turn) if m.chosen), None)
        if row is None or row.role != Role.ASSISTANT:
            raise NotFound("message", id=turn)
        if row.status == MessageStatus.WRITING and not _claim_expired(row.updated_at):
            raise Changed("conversation")  # its writer is still at it (another window): one writer per row
        shown = _names(session, actor, conversation_id)(row.text)  # the model carries on from what it reads
        request = replace(_request(session, actor, conversation_id, turn), continuation=shown)
        convs.update_message(session, row.id, status=MessageStatus.WRITING, error="")
        message_id, text = row.id, row.text
    start = lambda progress: backend.stream(request, stop, progress)  # noqa: E731
    return ReplyRun(db, message_id, turn, start, on_progress, so_far=text, shown_so_far=shown, waited_s=waited_s,
                    stop=stop)  # fmt: skip


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
        shown_so_far: str | None = None,
        waited_s: float = 0.0,
        stop: threading.Event | None = None,
    ) -> None:
        """`so_far`: the text a continued reply had, as stored; `shown_so_far`: as it reads (macros
        filled); `waited_s`: the wait before the backend was asked (the model loading); `stop`: the
        event the backend was given, set by `close` from another thread."""
        self.db, self.message_id, self.turn = db, message_id, turn
        self._stop = stop if stop is not None else threading.Event()
        self._waited = waited_s
        self._on_progress = on_progress
        self._so_far = so_far if shown_so_far is None else shown_so_far
        self._text: list[str] = [so_far] if so_far else []  # a continued reply keeps what it had
        self._claimed = time.monotonic()
        self._start = start
        self.stream: ReplyStream | None = None  # opened at the first chunk asked for (after any wait)
        self._idle = GenerationStats()
        self._settled = False
        self._chunks = self._save_as_it_streams()

    def _progress(self, phase: Text) -> None:
        if time.monotonic() - self._claimed >= CLAIM_SECONDS:
            self._save("".join(self._text), MessageStatus.WRITING, "")
        if self._on_progress is not None:
            self._on_progress(phase)

    @property
    def stats(self) -> GenerationStats:
        return self.stream.stats if self.stream is not None else self._idle

    @property
    def so_far(self) -> str:
        """The text the reply had before this run (a continued reply's start), empty for a new one."""
        return self._so_far

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        """End the reply. From the thread that reads it, at once; from another one (while it reads),
        by asking the backend to stop: the reading thread ends within about a second, settled."""
        try:
            self._chunks.close()
        except ValueError:  # "generator already executing": being read on another thread right now
            self._stop.set()
            return
        if not self._settled:  # closed before its first chunk was asked for: nothing was started
            self._settle(MessageStatus.PARTIAL, "")

    def _save_as_it_streams(self) -> Iterator[str]:
        text = self._text
        pending = 0
        outcome, error = MessageStatus.PARTIAL, ""
        try:
            self.stream = self._start(self._progress)
            for chunk in self.stream:
                if not isinstance(chunk, str):  # a backend's fault: never stored, and the row still settles
                    raise TypeError(f"a reply chunk that is not text ({type(chunk).__name__})")
                text.append(chunk)
                pending += 1
                yield chunk
                if pending >= FLUSH_CHUNKS or time.monotonic() - self._claimed >= FLUSH_SECONDS:
                    self._save("".join(text), MessageStatus.WRITING, "")
                    pending = 0
            outcome = MessageStatus.COMPLETE if self.stats.complete else MessageStatus.PARTIAL
        except GeneratorExit:  # the page went away mid-reply (Stop, a rerun): keep what was said
            outcome = MessageStatus.PARTIAL
            raise
        except Exception as exc:
            outcome = MessageStatus.PARTIAL if text else MessageStatus.ERROR
            error = stored_error(exc)  # a code and parameters: each viewer reads it in their language
            raise
        finally:
            self._settle(outcome, error)

    def _settle(self, outcome: str, error: str) -> None:
        """End the row: complete, partial or error, with the text so far and the stats."""
        self._settled = True
        if self.stream is not None:
            with contextlib.suppress(Exception):  # a stream that broke is closed enough: the row settles all the same
                self.stream.close()
        self.stats.queued_s += self._waited  # the caption counts the whole wait, the model's loading too
        if outcome == MessageStatus.PARTIAL and not error and self.stats.finish != "length":
            self.stats.stopped = True  # not the model's end, nor a failure: the person stopped it
        text = "".join(self._text)
        if not text and outcome == MessageStatus.PARTIAL and not error:
            self._drop()  # stopped before a word: no empty reply is left; the message waits for one
            return
        self._save(text, outcome, error)

    def _drop(self) -> None:
        try:
            with access.writing(self.db) as session:
                convs.delete_message(session, self.message_id)
        except convs.ConversationGone:
            pass

    def _save(self, text: str, status: str, error: str) -> None:
        self._claimed = time.monotonic()
        try:
            with access.writing(self.db) as session:
                convs.update_message(
                    session, self.message_id, text=text, status=status, error=error, stats=self.stats.to_dict()
                )
        except convs.ConversationGone:
            pass  # deleted in another tab while it streamed: nothing left to save into
