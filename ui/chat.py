"""The chat page's widgets: a message with its controls, the reply settings, and a reply streaming in.

Buttons here call the turn services (`core.services.turns`) in their callbacks, which run before the next
script run, so the page draws the new state once. A reply to write is a `ReplyPlan`: made by a
button or by sending a message, carried out by `stream_reply` in the same or the next run. What the
page does once the conversation is drawn is decided in one place, `next_step`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

import streamlit as st

from core.base.errors import Changed, NotFound, StorageFull, UserError
from core.base.sampling import LIMITS, InvalidSampler, SamplerSettings
from core.model.backend import Backend, BackendError, BackendStatus
from core.services import conversations, turns
from core.services.access import Actor
from core.services.turns import Bubble, Seen
from storage.tables import Character, Conversation, Role
from ui import resources, state
from ui.chat_files import export_buttons
from ui.language import lang, say, tr
from ui.markdown import inert, inert_line, inert_stream
from ui.server import unexpected
from ui.state import ReplyPlan
from ui.widgets import ask_to_confirm, confirmation, picture

LIVE_REFRESH_SECONDS = 2  # how often a reply another viewer is writing is re-read


def plan_reply(plan: ReplyPlan) -> None:
    state.REPLY_PLAN.set(plan)


def take_plan(conversation_id: int) -> ReplyPlan | None:
    """The reply planned for this conversation, if any (a plan made for another one is dropped)."""
    plan = state.REPLY_PLAN.pop()
    return plan if plan is not None and plan.conversation_id == conversation_id else None


class Next(Enum):
    """What the chat page does once the conversation is drawn."""

    WRITE_PLANNED = "write the reply a button planned"
    SEND = "store the message just typed, then reply to it"
    GREET = "greet: the character has no saved greeting"
    LOAD_MODEL = "load the model again, as the user asked"
    OFFER_REPLY = "offer a button that gets the reply the conversation waits for"
    NOTHING = "wait for the user"


def next_step(*, planned: bool, typed: bool, empty: bool, failed: bool, retry: bool, awaiting: bool) -> Next:
    """Decide what the chat page does after drawing the conversation: `planned`, a reply was planned;
    `typed`, a message (text or files) was just sent; `empty`, the conversation has no message yet;
    `failed`, the model cannot serve; `retry`, the user asked to load it again; `awaiting`, the last
    message is the user's, with no reply."""
    if planned:
        return Next.WRITE_PLANNED
    if typed:
        return Next.SEND
    if empty and not failed:
        return Next.GREET
    if retry:
        return Next.LOAD_MODEL
    if awaiting and not failed:
        return Next.OFFER_REPLY
    return Next.NOTHING


# -- callbacks: the services, with a failure said on the next run instead of raised -----------------
def _safely(action, *args) -> None:
    try:
        action(resources.db(), resources.actor(), *args)
    except UserError as exc:
        state.CHAT_ERROR.set(say(exc))


def _edit_and_resend(conversation_id: int, turn: int, seen: Seen) -> None:
    state.EDITING_TURN.pop()
    try:
        replaced = turns.edit(resources.db(), resources.actor(), conversation_id, turn, state.edit_text(turn).get(""),
                              seen)  # fmt: skip
    except UserError as exc:
        state.CHAT_ERROR.set(say(exc))
        return
    plan_reply(ReplyPlan(conversation_id, replaced))  # the new reply: the next turn, or where the old one stood


def show_error() -> None:
    if error := state.CHAT_ERROR.pop():
        st.error(error, icon=":material/error:")


# -- one message --------------------------------------------------------------------------------------
NARRATOR_AVATAR = ":material/auto_stories:"


def bubble(b: Bubble, conversation_id: int, avatar: bytes | None, *, name: str, last_reply: bool, seen: Seen) -> None:
    """A message as the user sees it, with its pager, regenerate, edit, hide and delete controls. `name`
    is the character's: a line an imported group chat gives to someone else is labelled with theirs.
    `seen`: the last message the page shows, carried by each action so a stale page is refused."""
    if b.orphaned:  # a reply never begun (the page went away first): none at all, the message waits
        return
    own = state.OWN_REPLY.get() == b.id
    if b.being_written and not own:  # by another tab or viewer: follow it instead of offering controls
        _live_bubble(conversation_id, b.id, avatar)
        return
    if own and not b.being_written:
        state.OWN_REPLY.pop()  # settled: from now on it is a message like any other
    if b.is_narrator:
        who, face = "narrator", NARRATOR_AVATAR
    else:
        who, face = ("user", None) if b.is_user else ("assistant", avatar)
    with st.chat_message(who, avatar=face):
        if b.is_narrator:
            st.caption(tr("chat.narrator"))
        elif not b.is_user and b.speaker and b.speaker != name:
            st.caption(inert_line(b.speaker))  # another speaker of a group chat, as the file names them
        for thumbnail in b.attachments:
            picture(thumbnail, width=160)
        if b.is_user and state.EDITING_TURN.get() == b.turn:
            _edit_form(b, conversation_id, seen)
            return
        if b.hidden:  # kept and shown, dimmed: the model does not read it
            st.caption(inert(b.text))
            st.caption(tr("chat.hidden"))
        else:
            st.markdown(inert(b.text))
        if b.unfinished or (own and b.being_written):
            st.caption(_why_unfinished(b))
        if b.error:
            st.error(tr("chat.failed", reason=say(b.error)), icon=":material/error:")
        reply = b.role == Role.ASSISTANT
        with st.container(horizontal=True, gap="small"):
            turn, key = b.turn, state.key
            if reply and b.variants > 1:
                _pager(b, conversation_id, seen)
            if reply and last_reply and b.unfinished:
                st.button(tr("chat.continue"), key=key.continue_reply(turn), icon=":material/play_arrow:",
                          type="tertiary", on_click=plan_reply,
                          args=(ReplyPlan(conversation_id, continue_turn=turn, seen=seen),))  # fmt: skip
            if reply and last_reply:
                st.button(tr("chat.regenerate"), key=key.regenerate(turn), icon=":material/refresh:", type="tertiary",
                          on_click=plan_reply, args=(ReplyPlan(conversation_id, turn, seen=seen),))  # fmt: skip
            if b.is_user:
                st.button(tr("chat.edit"), key=key.edit_message(turn), icon=":material/edit:", type="tertiary",
                          on_click=state.EDITING_TURN.set, args=(turn,))  # fmt: skip
            _message_menu(b, conversation_id, seen)
        if reply and last_reply and b.stats.get("new_tokens"):
            stats_caption(b.stats)


def _message_menu(b: Bubble, conversation_id: int, seen: Seen) -> None:
    """The rarer actions on a message: hide it from the model (or show it again), and delete it."""
    with st.popover("", icon=":material/more_horiz:", type="tertiary", help=tr("chat.more")):
        hidden = b.hidden
        st.button(tr("chat.show_to_model") if hidden else tr("chat.hide_from_model"),
                  key=state.key.hide_message(b.turn), type="tertiary",
                  icon=":material/visibility:" if hidden else ":material/visibility_off:",
                  on_click=_safely, args=(conversations.set_hidden, conversation_id, b.turn, not hidden))  # fmt: skip
        st.button(tr("chat.delete_message"), key=state.key.delete_message(b.turn), icon=":material/delete:",
                  type="tertiary", on_click=ask_to_confirm, args=("confirm_message_delete",),
                  kwargs={"conversation_id": conversation_id, "turn": b.turn, "variants": b.variants,
                          "seen": seen})  # fmt: skip


def _why_unfinished(b: Bubble) -> str:
    """Why a reply stopped short: it reached its length, the person stopped it, or (its error says
    why) the server failed part-way."""
    if b.stats.get("finish") == "length":
        return tr("chat.length_limit", count=int(b.stats.get("new_tokens") or 0))
    if b.error is None and (b.stats.get("stopped") or not b.stats):
        return tr("chat.partial")
    return tr("chat.unfinished_kept") if b.text.strip() else tr("chat.unfinished")


def message_delete_dialog() -> None:
    """The dialog that asks before a message goes: the one on screen (an alternative, or the message)."""

    def body(conversation_id: int, turn: int, variants: int, seen: Seen) -> str:
        return tr("chat.delete_message_body_one" if variants > 1 else "chat.delete_message_body")

    def delete(conversation_id: int, turn: int, variants: int, seen: Seen) -> None:
        _safely(turns.delete, conversation_id, turn, seen)

    confirmation("confirm_message_delete", tr("chat.delete_message_title"), body, delete)


@st.fragment(run_every=LIVE_REFRESH_SECONDS)
def _live_bubble(conversation_id: int, message_id: int, avatar: bytes | None) -> None:
    """A reply someone else is writing, re-read every few seconds; the page redraws once it is done."""
    try:
        b = turns.message(resources.db(), resources.actor(), conversation_id, message_id)
    except NotFound:
        st.rerun(scope="app")
    if not b.being_written:
        st.rerun(scope="app")
    with st.chat_message("assistant", avatar=avatar):
        st.markdown(inert(b.text))
        st.caption(tr("chat.writing"))


def _renewing(conversation_id: int, message_id: int) -> Callable[[], None]:
    """A callback that renews a kept reply row's claim, at most every few seconds."""
    last = [0.0]

    def renew() -> None:
        if time.monotonic() - last[0] >= turns.CLAIM_SECONDS:
            last[0] = time.monotonic()
            turns.renew(resources.db(), resources.actor(), conversation_id, message_id)

    return renew


FOLLOW_SECONDS = 3  # how often an open conversation checks whether another window added to it


@st.fragment(run_every=FOLLOW_SECONDS)
def follow(actor: Actor, conversation_id: int, seen: Seen) -> None:
    """Redraw the page when another window or replica changed the end of the conversation (two
    indexed reads every few seconds: the access check and the last message), so what is on screen is
    what the buttons act on. `actor`: as the page run found them (a sign-out counts at the next run)."""
    try:
        now = turns.seen_now(resources.db(), actor, conversation_id)
    except NotFound:
        st.rerun(scope="app")
    if now != seen:
        st.rerun(scope="app")


def _pager(b: Bubble, conversation_id: int, seen: Seen) -> None:
    st.button("‹", key=state.key.previous(b.turn), disabled=b.variant == 0, type="tertiary",
              help=tr("chat.previous"), on_click=_safely,
              args=(turns.choose, conversation_id, b.turn, b.variant - 1, seen))  # fmt: skip
    st.markdown(f"{b.variant + 1}/{b.variants}", width="content")
    st.button("›", key=state.key.next(b.turn), disabled=b.variant >= b.variants - 1, type="tertiary",
              help=tr("chat.next"), on_click=_safely,
              args=(turns.choose, conversation_id, b.turn, b.variant + 1, seen))  # fmt: skip


def _edit_form(b: Bubble, conversation_id: int, seen: Seen) -> None:
    with st.form(state.key.edit_message(b.turn)):
        st.text_area(tr("chat.edit_label"), b.text, key=state.edit_text(b.turn).key)
        save, cancel = st.columns(2)
        save.form_submit_button(tr("chat.resend"), type="primary", icon=":material/send:",
                                on_click=_edit_and_resend, args=(conversation_id, b.turn, seen))  # fmt: skip
        cancel.form_submit_button(tr("common.cancel"), on_click=state.EDITING_TURN.pop)


def stats_caption(stats: dict) -> None:
    """How the reply went: the wait for the model, first token and speed, and what the cache saved.
    Only numbers are read (a row may come from a restored backup)."""

    def number(key: str) -> float:
        value = stats.get(key, 0)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else 0

    parts = []
    if number("queued_s") >= 1:
        parts.append(tr("chat.stats.waited", seconds=f"{number('queued_s'):.0f}"))
    if stats.get("stopped") is True:
        parts.append(tr("chat.stats.stopped", count=int(number("new_tokens"))))
    if number("new_tokens") >= 2 and number("tokens_per_s"):  # measured (not a reply cut off mid-way)
        parts.append(tr("chat.stats.speed", ttft=f"{number('ttft_s'):.2f}", tps=f"{number('tokens_per_s'):.1f}"))
    prompt = int(number("prompt_tokens"))
    if stats.get("estimated") is True:  # the server sent no counts: ours is an estimate, and says so
        parts.append(tr("chat.stats.estimated", prompt=prompt))
    else:
        parts.append(tr("chat.stats.prompt", prompt=prompt, cached=prompt - int(number("prefilled_tokens"))))
    line = " · ".join(parts)
    st.caption(line[:1].upper() + line[1:])
    if dropped := int(number("dropped_turns")):
        st.caption(tr("chat.trimmed", count=dropped))


# -- reply settings -----------------------------------------------------------------------------------
def sampler_form(conversation: Conversation, backend: Backend) -> None:
    """The conversation's reply settings, validated (and checked against the model's context) before saving.
    The inputs offer what validation accepts: both read `core.base.sampling.LIMITS`."""

    def slider(name: str, value: float, **options: Any) -> float:
        limit = LIMITS[name]
        return st.slider(tr(f"sampler.label.{name}"), float(limit.lowest), float(limit.highest), float(value),
                         limit.step, **options)  # fmt: skip

    def whole(name: str, value: int) -> int:
        limit = LIMITS[name]
        return st.number_input(tr(f"sampler.label.{name}"), int(limit.lowest), int(limit.highest), int(value))

    with st.expander(tr("chat.settings")), st.form(state.key.sampler_form(conversation.id)):
        current = conversations.sampler(conversation)
        temperature = slider("temperature", current.temperature, help=tr("sampler.help.temperature"))
        top_p = slider("top_p", current.top_p)
        top_k = whole("top_k", current.top_k)
        max_new = whole("max_new_tokens", current.max_new_tokens)
        penalty = slider("repetition_penalty", current.repetition_penalty)
        fixed = st.checkbox(tr("sampler.label.fixed_seed"), current.seed is not None)
        seed = whole("seed", current.seed or 0)
        if st.form_submit_button(tr("common.save"), icon=":material/tune:"):
            try:
                chosen = SamplerSettings(temperature, top_p, int(top_k), int(max_new), penalty,
                                         int(seed) if fixed else None)  # fmt: skip
                conversations.save_sampler(resources.db(), resources.actor(), conversation.id, chosen, backend)
            except InvalidSampler as exc:
                for message in exc.messages(lang()):
                    st.error(message)
            except UserError as exc:
                st.error(say(exc), icon=":material/error:")
            else:
                st.toast(tr("chat.settings_saved"), icon=":material/tune:")


# -- the model, and a reply being written -------------------------------------------------------------
def model_failure(status: BackendStatus, conversation_id: int, awaiting_reply: bool, seen: Seen) -> None:
    """Why the model cannot serve, once, with the one button that tries again (and then replies). That
    a message is kept is said only when one waits for its reply."""
    failure_notice(status, on_click=_retry, args=(conversation_id, awaiting_reply, seen))
    if awaiting_reply:
        st.caption(tr("chat.kept"))


def failure_notice(status: BackendStatus, key: str | None = None, **retry: Any) -> None:
    """Why the model cannot serve, and the button that tries loading it again (`retry`: its callback)."""
    st.error(say(status.error) if status.error else tr("chat.model_failed"), icon=":material/error:")
    st.button(tr("chat.retry_model"), icon=":material/refresh:", key=key, **retry)


def _retry(conversation_id: int, awaiting_reply: bool, seen: Seen) -> None:
    state.RETRY_MODEL.set(True)
    if awaiting_reply:
        plan_reply(ReplyPlan(conversation_id, seen=seen))


def ensure_ready(
    backend: Backend, on_ready: Callable[[], None] | None = None, alive: Callable[[], None] | None = None
) -> bool:
    """Load the model (or connect) showing each phase and its clock; False if it cannot serve (the
    caller shows why, with `failure_notice`). A failure is retried only when asked. `alive` is called
    with each progress report (about once a second while it loads)."""
    status = backend.status()
    retry = bool(state.RETRY_MODEL.pop())
    if status.state == "ready" and backend.prepared:
        return True
    if status.state == "failed" and not retry:
        return False
    slot = st.empty()
    started = time.monotonic()
    try:
        with slot.container():
            if status.remote:  # a server may take its time: its clock ticks, and Stop (any click) ends the wait
                st.button(tr("chat.stop"), icon=":material/stop_circle:", key=state.key.STOP_CONNECTING)
            with st.status(tr("chat.loading_model"), expanded=False) as box:

                def progress(phase) -> None:
                    box.update(label=say(phase))
                    if alive is not None:
                        alive()

                backend.prepare(progress=progress)
    except BackendError:
        slot.empty()  # after the box is closed, so it cannot come back as "done" above the error
        return False
    slot.empty()  # loaded: nothing stale stays on the page
    state.LOADED_FOR.set(time.monotonic() - started)  # the next reply's caption counts this wait
    if on_ready is not None:
        on_ready()
    return True


def _letting_go_of_the_kept_row(write: Callable[..., None]) -> Callable[..., None]:
    """However writing a planned reply ends, the row `send` kept for it is let go of unless the reply
    took it up: a click or a reload stops the page (Streamlit raises at its next drawing) while the
    model loads, say. The message then waits for its reply, with "Get a reply"."""

    @functools.wraps(write)
    def writing(backend: Backend, plan: ReplyPlan, *args: Any, **kwargs: Any) -> None:
        try:
            write(backend, plan, *args, **kwargs)
        finally:
            if plan.into is not None:  # a row the reply took up is its own: this does nothing then
                with contextlib.suppress(UserError):
                    turns.abandon(resources.db(), resources.actor(), plan.conversation_id, plan.into)

    return writing


def _write_stream(chunks: Iterator[str], every_s: float = 0.05) -> str:
    """Streamed text drawn into one placeholder as it comes (at most every `every_s`, and at the end):
    what `st.write_stream` does for text, without its check for tables, which imports pandas, a
    package the desktop build leaves out. Each drawing is also where Streamlit acts on Stop."""
    slot, text, drawn = st.empty(), "", 0.0
    for chunk in chunks:
        text += chunk
        if time.monotonic() - drawn >= every_s:
            slot.markdown(text)
            drawn = time.monotonic()
    slot.markdown(text)
    return text


@_letting_go_of_the_kept_row
def stream_reply(
    backend: Backend, plan: ReplyPlan, avatar: bytes | None, on_ready: Callable[[], None] | None = None
) -> None:
    """Write the planned reply into a new bubble, saying what it waits for until the text comes, and
    saving it as it streams; then redraw the page."""
    keep_alive = None
    if plan.into is not None:  # the kept reply row stays claimed while the model loads, so others wait for it
        keep_alive = _renewing(plan.conversation_id, plan.into)
    if not ensure_ready(backend, on_ready, keep_alive):
        if plan.into is not None:  # the message waits for its reply: "try again" writes it
            turns.abandon(resources.db(), resources.actor(), plan.conversation_id, plan.into)
        st.rerun()  # the page shows why once, beside the conversation, with its retry button
    with st.chat_message("assistant", avatar=avatar):
        st.button(tr("chat.stop"), icon=":material/stop_circle:", key=state.key.STOP)  # any click reruns: that stops it
        note = st.empty()
        writing = [False]

        def progress(phase) -> None:
            """Each phase, and at least once a second while the server is silent mid-reply: drawing
            something is what lets Streamlit act on Stop, which it does only when the page changes."""
            if writing[0]:
                note.empty()
            else:
                note.info(say(phase), icon=":material/hourglass_top:")

        try:
            run = turns.reply(resources.db(), resources.actor(), backend, plan.conversation_id,
                              regenerate_turn=plan.regenerate_turn, continue_turn=plan.continue_turn,
                              into=plan.into, seen=plan.seen, on_progress=progress,
                              waited_s=state.LOADED_FOR.pop() or 0.0)  # fmt: skip
        except (Changed, NotFound) as exc:  # moved on in another window: the page as it is now, and why
            state.CHAT_ERROR.set(say(exc))
            st.rerun()
        except UserError as exc:
            st.error(say(exc), icon=":material/error:")
            return
        state.OWN_REPLY.set(run.message_id)

        def chunks() -> Iterator[str]:
            yield run.so_far  # a continued reply shows what it had, then carries on
            for chunk in run:
                if not writing[0]:
                    writing[0] = True
                    note.empty()
                yield chunk

        try:
            _write_stream(inert_stream(chunks()))
        except StorageFull as problem:  # the reply could not be saved: say so here, the page shows the rest
            st.error(say(problem), icon=":material/hard_drive:")
            return
        except (UserError, BackendError):  # already saved on the message row; shown after the rerun
            pass
        except Exception as problem:  # noqa: BLE001 - the page's own fault, not the reply's: logged, said here
            unexpected(problem)
            return
        finally:
            run.close()
    st.rerun()


def conversation_menu(character: Character, conversation: Conversation) -> None:
    """The sidebar's "This conversation": rename, delete (asked first), export, and the author's note an
    imported chat brought (shown and kept, never sent to the model)."""
    db, actor, conversation_id = resources.db(), resources.actor(), conversation.id
    with st.expander(tr("chat.this_conversation")):
        title = st.text_input(tr("chat.rename"), conversation.title, key=state.key.title(conversation_id))
        renamed = st.button(tr("common.save"), key=state.key.RENAME, icon=":material/save:")
        if renamed and title.strip() != conversation.title:
            conversations.rename(db, actor, conversation_id, title)
            st.rerun()
        if st.button(tr("chat.delete"), key=state.key.DELETE_CONVERSATION, icon=":material/delete:"):
            ask_to_confirm("confirm_conv_delete", conversation_id=conversation_id, title=conversation.title)
            st.rerun()
        export_buttons(character, conversation)
        if note := conversations.author_note(db, actor, conversation_id):
            st.caption(tr("chat.author_note"))
            st.text(note.text)
