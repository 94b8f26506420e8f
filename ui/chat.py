"""The chat page's widgets: a message with its controls, the reply settings, and a reply streaming in.

Buttons here call the turn services (`core.services.turns`) in their callbacks, which run before the next
script run, so the page draws the new state once. A reply to write is a `ReplyPlan`: made by a
button or by sending a message, carried out by `stream_reply` in the same or the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import streamlit as st

from core.base.errors import NotFound, StorageFull, UserError
from core.base.sampling import InvalidSampler, SamplerSettings
from core.model.backend import Backend, BackendError, BackendStatus
from core.services import conversations, turns
from core.services.turns import Bubble
from storage.tables import Conversation
from ui import resources
from ui.language import lang, say, tr
from ui.markdown import inert, inert_stream
from ui.widgets import picture

LIVE_REFRESH_SECONDS = 2  # how often a reply another viewer is writing is re-read


@dataclass(frozen=True)
class ReplyPlan:
    """A reply to write in `conversation_id`: the next turn, a new alternative of `regenerate_turn`, or
    more of the unfinished reply of `continue_turn`."""

    conversation_id: int
    regenerate_turn: int | None = None
    continue_turn: int | None = None

    @property
    def replaces(self) -> int | None:
        """The turn whose bubble the reply being written takes the place of, if any."""
        return self.regenerate_turn if self.regenerate_turn is not None else self.continue_turn


def plan_reply(plan: ReplyPlan) -> None:
    st.session_state.reply_plan = plan


def take_plan(conversation_id: int) -> ReplyPlan | None:
    """The reply planned for this conversation, if any (a plan made for another one is dropped)."""
    plan = st.session_state.pop("reply_plan", None)
    return plan if plan is not None and plan.conversation_id == conversation_id else None


# -- callbacks: the services, with a failure said on the next run instead of raised -----------------
def _safely(action, *args) -> None:
    try:
        action(resources.db(), resources.actor(), *args)
    except UserError as exc:
        st.session_state.chat_error = say(exc)


def _edit_and_resend(conversation_id: int, turn: int) -> None:
    st.session_state.pop("editing_turn", None)
    text = st.session_state.get(f"edit_text_{turn}", "")
    _safely(turns.edit, conversation_id, turn, text)
    if "chat_error" not in st.session_state:
        plan_reply(ReplyPlan(conversation_id))


def show_error() -> None:
    if error := st.session_state.pop("chat_error", None):
        st.error(error, icon=":material/error:")


# -- one message --------------------------------------------------------------------------------------
def bubble(b: Bubble, conversation_id: int, avatar: bytes | None, *, last_reply: bool) -> None:
    """A message as the user sees it, with its pager, regenerate, edit and delete controls."""
    if b.being_written:  # by another tab or viewer: follow it instead of offering controls
        _live_bubble(conversation_id, b.id, avatar)
        return
    with st.chat_message("user" if b.is_user else "assistant", avatar=None if b.is_user else avatar):
        for thumbnail in b.attachments:
            picture(thumbnail, width=160)
        if b.is_user and st.session_state.get("editing_turn") == b.turn:
            _edit_form(b, conversation_id)
            return
        st.markdown(inert(b.text))
        if b.unfinished:
            st.caption(tr("chat.partial"))
        if b.error:
            st.error(tr("chat.failed", reason=say(b.error)), icon=":material/error:")
        with st.container(horizontal=True, gap="small"):
            if not b.is_user and b.variants > 1:
                _pager(b, conversation_id)
            if not b.is_user and last_reply and b.unfinished:
                st.button(tr("chat.continue"), key=f"continue_{b.turn}", icon=":material/play_arrow:", type="tertiary",
                          on_click=plan_reply, args=(ReplyPlan(conversation_id, continue_turn=b.turn),))  # fmt: skip
            if not b.is_user and last_reply:
                st.button(tr("chat.regenerate"), key=f"regen_{b.turn}", icon=":material/refresh:", type="tertiary",
                          on_click=plan_reply, args=(ReplyPlan(conversation_id, b.turn),))  # fmt: skip
            if b.is_user:
                st.button(tr("chat.edit"), key=f"edit_{b.turn}", icon=":material/edit:", type="tertiary",
                          on_click=st.session_state.update, kwargs={"editing_turn": b.turn})  # fmt: skip
            st.button(tr("chat.delete_message"), key=f"del_{b.turn}", icon=":material/delete:", type="tertiary",
                      on_click=_safely, args=(turns.delete, conversation_id, b.turn))  # fmt: skip
        if not b.is_user and last_reply and b.stats.get("new_tokens"):
            stats_caption(b.stats)


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


def _pager(b: Bubble, conversation_id: int) -> None:
    st.button("‹", key=f"prev_{b.turn}", disabled=b.variant == 0, type="tertiary", help=tr("chat.previous"),
              on_click=_safely, args=(turns.choose, conversation_id, b.turn, b.variant - 1))  # fmt: skip
    st.markdown(f"{b.variant + 1}/{b.variants}", width="content")
    st.button("›", key=f"next_{b.turn}", disabled=b.variant >= b.variants - 1, type="tertiary", help=tr("chat.next"),
              on_click=_safely, args=(turns.choose, conversation_id, b.turn, b.variant + 1))  # fmt: skip


def _edit_form(b: Bubble, conversation_id: int) -> None:
    with st.form(f"edit_{b.turn}"):
        st.text_area(tr("chat.edit_label"), b.text, key=f"edit_text_{b.turn}")
        save, cancel = st.columns(2)
        save.form_submit_button(tr("chat.resend"), type="primary", icon=":material/send:",
                                on_click=_edit_and_resend, args=(conversation_id, b.turn))  # fmt: skip
        cancel.form_submit_button(tr("common.cancel"), on_click=st.session_state.pop, args=("editing_turn", None))


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
    parts.append(tr("chat.stats.prompt", prompt=prompt, cached=prompt - int(number("prefilled_tokens"))))
    line = " · ".join(parts)
    st.caption(line[:1].upper() + line[1:])
    if dropped := int(number("dropped_turns")):
        st.caption(tr("chat.trimmed", count=dropped))


# -- reply settings -----------------------------------------------------------------------------------
def sampler_form(conversation: Conversation, backend: Backend) -> None:
    """The conversation's reply settings, validated (and checked against the model's context) before saving."""
    with st.expander(tr("chat.settings")), st.form(f"sampler_{conversation.id}"):
        current = conversations.sampler(conversation)
        temperature = st.slider(tr("sampler.label.temperature"), 0.0, 2.0, float(current.temperature), 0.05,
                                help=tr("sampler.help.temperature"))  # fmt: skip
        top_p = st.slider(tr("sampler.label.top_p"), 0.05, 1.0, float(current.top_p), 0.05)
        top_k = st.number_input(tr("sampler.label.top_k"), 0, 1000, int(current.top_k))
        max_new = st.number_input(tr("sampler.label.max_new_tokens"), 1, 4096, int(current.max_new_tokens))
        penalty = st.slider(tr("sampler.label.repetition_penalty"), 1.0, 2.0, float(current.repetition_penalty), 0.05)
        fixed = st.checkbox(tr("sampler.label.fixed_seed"), current.seed is not None)
        seed = st.number_input(tr("sampler.label.seed"), 0, 2**31 - 1, int(current.seed or 0))
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
def model_failure(status: BackendStatus, conversation_id: int, awaiting_reply: bool) -> None:
    """Why the model cannot serve, once, with the one button that tries again (and then replies)."""
    failure_notice(status, on_click=_retry, args=(conversation_id, awaiting_reply))


def failure_notice(status: BackendStatus, key: str | None = None, **retry: Any) -> None:
    """Why the model cannot serve, and the button that tries loading it again (`retry`: its callback)."""
    st.error(say(status.error) if status.error else tr("chat.model_failed"), icon=":material/error:")
    st.button(tr("chat.retry_model"), icon=":material/refresh:", key=key, **retry)


def _retry(conversation_id: int, awaiting_reply: bool) -> None:
    st.session_state.retry_model = True
    if awaiting_reply:
        plan_reply(ReplyPlan(conversation_id))


def ensure_ready(backend: Backend, on_ready: Callable[[], None] | None = None) -> bool:
    """Load the model (or connect) showing each phase and its clock; False if it cannot serve (the
    caller shows why, with `failure_notice`). A failure is retried only when asked."""
    status = backend.status()
    retry = st.session_state.pop("retry_model", False)
    if status.state == "ready" and backend.prepared:
        return True
    if status.state == "failed" and not retry:
        return False
    slot = st.empty()
    with slot.status(tr("chat.loading_model"), expanded=False) as box:
        try:
            backend.prepare(progress=lambda phase: box.update(label=say(phase)))
        except BackendError:
            slot.empty()
            return False
    slot.empty()  # loaded: nothing stale stays on the page
    if on_ready is not None:
        on_ready()
    return True


def stream_reply(
    backend: Backend, plan: ReplyPlan, avatar: bytes | None, on_ready: Callable[[], None] | None = None
) -> None:
    """Write the planned reply into a new bubble, saying what it waits for until the text comes, and
    saving it as it streams; then redraw the page."""
    if not ensure_ready(backend, on_ready):
        st.rerun()  # the page shows why once, beside the conversation, with its retry button
    with st.chat_message("assistant", avatar=avatar):
        st.button(tr("chat.stop"), icon=":material/stop_circle:", key="stop")  # any click reruns: that stops it
        note = st.empty()
        writing = [False]

        def progress(phase) -> None:
            if not writing[0]:
                note.info(say(phase), icon=":material/hourglass_top:")

        try:
            run = turns.reply(resources.db(), resources.actor(), backend, plan.conversation_id,
                              regenerate_turn=plan.regenerate_turn, continue_turn=plan.continue_turn,
                              on_progress=progress)  # fmt: skip
        except UserError as exc:
            st.error(say(exc), icon=":material/error:")
            return

        def chunks() -> Iterator[str]:
            yield run.so_far  # a continued reply shows what it had, then carries on
            for chunk in run:
                if not writing[0]:
                    writing[0] = True
                    note.empty()
                yield chunk

        try:
            st.write_stream(inert_stream(chunks()))
        except StorageFull as problem:  # the reply could not be saved: say so here, the page shows the rest
            st.error(say(problem), icon=":material/hard_drive:")
            return
        except Exception:  # noqa: BLE001 - already saved on the message row; shown after the rerun
            pass
        finally:
            run.close()
    st.rerun()
