"""Read the sheet, on Create and in Library's editor: the model drafts the profile into the form.

The draft streams with progress and Stop; what it finds lands in the form's inputs (`ui.state.field`,
drawn by `ui.profile_form`) for the user to edit before saving, and one field can be drafted again.
Streamlit lets a page set an input's value only before the input is drawn, so a finished (or stopped)
draft is kept in the session and put into the inputs on the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from core.base.errors import UserError
from core.base.i18n import Text
from core.base.sheets import Picture
from core.model.backend import Backend
from core.services.draft import FIELDS, parse_draft, read_sheet
from ui import state
from ui.chat import ensure_ready, failure_notice
from ui.language import lang, reply_language, say, tr
from ui.profile_form import shown_value

PROGRESS_EVERY = 8  # chunks between looks at how many fields the draft has so far


def apply_draft(suffix: str | int) -> None:
    """Call before the profile inputs are drawn: a finished or stopped draft fills them; text that
    did not parse is added to the notes. Says what happened, once."""
    partial = state.draft_partial(suffix).pop()
    done = state.draft_done(suffix).pop()
    kept = done or partial  # a partial one alone: Stop (or leaving the page) ended the run part-way
    if kept is None:
        return
    text, only = kept
    if not text.strip() and not done:  # Stop came before the first word
        state.draft_notice(suffix).set((tr("draft.stopped_early"), False))
        return
    draft = parse_draft(text, only)
    for name, value in draft.fields.items():
        state.field(name, suffix).set(shown_value(name, value))
    if draft.leftover:
        notes = state.field("notes", suffix)
        parts = (notes.get("").rstrip(), tr("draft.leftover_heading"), draft.leftover)
        notes.set("\n\n".join(p for p in parts if p))
    found = ", ".join(tr(f"field.{name}") for name in draft.found)
    if draft.fields:
        notice = tr("draft.done" if done else "draft.stopped", count=len(draft.found), fields=found)
    else:
        notice = tr("draft.unreadable" if draft.leftover else "draft.nothing")
    state.draft_notice(suffix).set((notice, bool(draft.fields)))


def draft_controls(
    backend: Backend, suffix: str | int, images: Sequence[Picture] | Callable[[], Sequence[Picture]]
) -> None:
    """The "Read the sheet" buttons, and the draft streaming in when one is clicked. `images`: the
    pictures, or a function that reads them (only called when a draft starts)."""
    with st.container(border=True):
        st.markdown(f"**{tr('draft.title')}**")
        st.caption(tr("draft.why"))
        row = st.container(horizontal=True, vertical_alignment="bottom")
        ready = bool(images) if not callable(images) else True
        everything = row.button(tr("draft.all"), icon=":material/auto_awesome:", disabled=not ready,
                                key=state.key.draft_all(suffix),
                                help=None if ready else tr("draft.needs_sheet"))  # fmt: skip
        # The options are the labels themselves, and the key names the UI language: switching it starts afresh.
        labels = {tr(f"field.{name}"): name for name in FIELDS}
        chosen = row.selectbox(tr("draft.one_field"), list(labels), key=state.key.draft_field(suffix, lang()))
        field = labels[chosen]
        one = row.button(
            tr("draft.again"), icon=":material/refresh:", disabled=not ready, key=state.key.draft_one(suffix)
        )
        if notice := state.draft_notice(suffix).pop():
            text, good = notice
            (st.success if good else st.warning)(text, icon=":material/auto_awesome:")
        redo = state.draft_redo(suffix).pop()  # "try again" after the model failed to load
        if everything or one or redo:
            only = redo[0] if redo else None if everything else field
            _stream_draft(backend, suffix, images() if callable(images) else images, only)


def _stream_draft(backend: Backend, suffix: str | int, images: Sequence[Picture], only: str | None) -> None:
    if not ensure_ready(backend):
        failure_notice(backend.status(), key=state.key.draft_retry(suffix), on_click=_retry, args=(suffix, only))
        return
    st.button(tr("chat.stop"), icon=":material/stop_circle:", key=state.key.draft_stop(suffix))  # a click reruns: stop
    language = state.field("language", suffix).get() or reply_language()
    notes, name = state.field("notes", suffix).get(""), state.field("name", suffix).get("")
    state.draft_partial(suffix).set(("", only))  # a Stop before the first word is said too
    with st.status(tr("draft.reading"), expanded=True) as box:
        bar, shown = st.progress(0.0), st.empty()

        def progress(phase: Text) -> None:
            """Each phase with its clock (ticking while the model is silent); a draft reads notes, not a chat."""
            if phase.key == "progress.reading":
                phase = Text("draft.phase.reading", phase.params)
            box.update(label=say(phase))

        try:
            run = read_sheet(backend, images, notes, language, only=only, name="" if only == "name" else name,
                             on_progress=progress)  # fmt: skip
        except UserError as exc:
            box.update(label=say(exc), state="error")
            return
        wanted = 1 if only else len(FIELDS)
        try:
            for i, _chunk in enumerate(run):
                state.draft_partial(suffix).set((run.text, only))  # kept if Stop ends the run
                if i % PROGRESS_EVERY == 0:
                    found = len(parse_draft(run.text, only).found)
                    bar.progress(min(found / wanted, 1.0), text=tr("draft.progress", found=found, total=wanted))
                    shown.code(run.text[-1200:], language="json", wrap_lines=True)  # a code block: never markup
        except UserError as exc:
            box.update(label=say(exc), state="error")
            state.draft_partial(suffix).pop()
            return
        finally:
            run.close()
    state.draft_partial(suffix).pop()
    state.draft_done(suffix).set((run.text, only))
    st.rerun()


def _retry(suffix: str | int, only: str | None) -> None:
    """The draft's "try again": load the model again, then draft what was asked."""
    state.RETRY_MODEL.set(True)
    state.draft_redo(suffix).set((only,))
