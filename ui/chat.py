"""The chat page's widgets: a message with its controls, the reply settings, and a reply streaming in.

Buttons here call the turn services (`core.turns`) in their callbacks, which run before the next
script run, so the page draws the new state once. A reply to write is a `ReplyPlan`: made by a
button or by sending a message, carried out by `stream_reply` in the same or the next run.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core import conversations, turns
from core.backend import Backend, BackendError
from core.errors import UserError
from core.sampling import InvalidSampler, SamplerSettings
from core.turns import Bubble
from storage.tables import Conversation
from ui import resources
from ui.language import lang, say, tr
from ui.markdown import inert, inert_stream


@dataclass(frozen=True)
class ReplyPlan:
    """A reply to write in `conversation_id`: the next turn, or a new alternative of `regenerate_turn`."""

    conversation_id: int
    regenerate_turn: int | None = None


def plan_reply(plan: ReplyPlan) -> None:
    st.session_state.reply_plan = plan


def take_plan(conversation_id: int) -> ReplyPlan | None:
    """The reply planned for this conversation, if any (a plan for another one is dropped)."""
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
    with st.chat_message("user" if b.is_user else "assistant", avatar=None if b.is_user else avatar):
        for thumbnail in b.attachments:
            st.image(thumbnail, width=160)
        if b.is_user and st.session_state.get("editing_turn") == b.turn:
            _edit_form(b, conversation_id)
            return
        st.markdown(inert(b.text))
        if b.unfinished:
            st.caption(tr("chat.partial"))
        if b.error:
            st.error(tr("chat.failed", reason=b.error), icon=":material/error:")
        with st.container(horizontal=True, gap="small"):
            if not b.is_user and b.variants > 1:
                _pager(b, conversation_id)
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


def stats_caption(s: dict) -> None:
    cached = s["prompt_tokens"] - s["prefilled_tokens"]
    st.caption(tr("chat.stats", ttft=f"{s['ttft_s']:.2f}", tps=f"{s['tokens_per_s']:.1f}",
                  prompt=s["prompt_tokens"], cached=cached))  # fmt: skip
    if s.get("dropped_turns"):
        st.caption(tr("chat.trimmed", count=s["dropped_turns"]))


# -- reply settings -----------------------------------------------------------------------------------
def sampler_form(conversation: Conversation) -> None:
    """The conversation's reply settings, validated before they are saved."""
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
                conversations.save_sampler(resources.db(), resources.actor(), conversation.id, chosen)
            except InvalidSampler as exc:
                for message in exc.messages(lang()):
                    st.error(message)
            except UserError as exc:
                st.error(say(exc))
            else:
                st.toast(tr("chat.settings_saved"), icon=":material/tune:")


# -- a reply being written ----------------------------------------------------------------------------
def _retry_button(plan: ReplyPlan) -> None:
    st.button(tr("chat.retry_model"), icon=":material/refresh:", on_click=st.session_state.update,
              kwargs={"retry_model": True, "reply_plan": plan})  # fmt: skip


def _ready(backend: Backend, plan: ReplyPlan) -> bool:
    """Load the model (or connect) with its phases shown; False, with the reason and a retry, if it cannot."""
    status = backend.status()
    if status.state == "failed" and not st.session_state.pop("retry_model", False):
        _retry_button(plan)  # the error itself is shown with the model status
        return False
    if status.state == "ready":
        return True
    with st.status(tr("chat.loading_model"), expanded=True) as box:
        try:
            backend.prepare(progress=lambda phase: box.write(say(phase)))
        except BackendError as exc:
            box.update(label=tr("chat.model_failed"), state="error")
            st.error(say(exc), icon=":material/error:")
            _retry_button(plan)
            return False
        box.update(label=tr("chat.model_ready"), state="complete", expanded=False)
    return True


def stream_reply(backend: Backend, plan: ReplyPlan, avatar: bytes | None) -> None:
    """Write the planned reply into a new bubble, saving it as it streams, then redraw the page."""
    if not _ready(backend, plan):
        return
    with st.chat_message("assistant", avatar=avatar):
        st.button(tr("chat.stop"), icon=":material/stop_circle:", key="stop")  # any click reruns: that stops it
        note = st.empty()

        def waiting(ahead: int) -> None:
            note.info(tr("chat.queued", ahead=ahead), icon=":material/hourglass_top:")

        try:
            run = turns.reply(resources.db(), resources.actor(), backend, plan.conversation_id,
                              regenerate_turn=plan.regenerate_turn, lang=lang(), on_wait=waiting)  # fmt: skip
        except UserError as exc:
            st.error(say(exc), icon=":material/error:")
            return
        try:
            st.write_stream(inert_stream(run))
        except Exception:  # noqa: BLE001 - already saved on the message row; shown after the rerun
            pass
        finally:
            run.close()
    st.rerun()
