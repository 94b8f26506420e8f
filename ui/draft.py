"""Read the sheet, on Create and in Library's editor: the model drafts the profile into the form.

The draft streams with progress and Stop; what it finds lands in the form's inputs (keyed
`<field>_<suffix>`, see `ui.profile_form`) for the user to edit before saving, and one field can be
drafted again. Streamlit lets a page set an input's value only before the input is drawn, so a
finished (or stopped) draft is kept in the session and put into the inputs on the next run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from core.base.errors import UserError
from core.base.sheets import Picture
from core.model.backend import Backend
from core.services.draft import FIELDS, parse_draft, read_sheet
from ui.chat import ensure_ready, failure_notice
from ui.language import lang, reply_language, say, tr
from ui.profile_form import shown_value

PROGRESS_EVERY = 8  # chunks between looks at how many fields the draft has so far


def apply_draft(suffix: str | int) -> None:
    """Call before the profile inputs are drawn: a finished or stopped draft fills them; text that
    did not parse is added to the notes. Says what happened, once."""
    for state in ("done", "stopped"):
        if (kept := st.session_state.pop(f"draft_{state}_{suffix}", None)) is not None:
            st.session_state.pop(f"draft_partial_{suffix}", None)
            break
    else:
        if (kept := st.session_state.pop(f"draft_partial_{suffix}", None)) is None:
            return
        state = "stopped"  # Stop (or leaving the page) ended the run part-way: keep what came
    text, only = kept
    draft = parse_draft(text, only)
    for name, value in draft.fields.items():
        st.session_state[f"{name}_{suffix}"] = shown_value(name, value)
    notes_key = f"notes_{suffix}"
    if draft.leftover:
        before = st.session_state.get(notes_key, "").rstrip()
        parts = (before, tr("draft.leftover_heading"), draft.leftover)
        st.session_state[notes_key] = "\n\n".join(p for p in parts if p)
    found = ", ".join(tr(f"field.{name}") for name in draft.found)
    if draft.fields:
        notice = tr("draft.stopped" if state == "stopped" else "draft.done", count=len(draft.found), fields=found)
    else:
        notice = tr("draft.unreadable" if draft.leftover else "draft.nothing")
    st.session_state[f"draft_notice_{suffix}"] = (notice, bool(draft.fields))


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
                                key=f"draft_all_{suffix}", help=None if ready else tr("draft.needs_sheet"))  # fmt: skip
        # The options are the labels themselves, and the key names the UI language: switching it starts afresh.
        labels = {tr(f"field.{name}"): name for name in FIELDS}
        chosen = row.selectbox(tr("draft.one_field"), list(labels), key=f"draft_field_{suffix}_{lang()}")
        field = labels[chosen]
        one = row.button(tr("draft.again"), icon=":material/refresh:", disabled=not ready, key=f"draft_one_{suffix}")
        if notice := st.session_state.pop(f"draft_notice_{suffix}", None):
            text, good = notice
            (st.success if good else st.warning)(text, icon=":material/auto_awesome:")
        redo = st.session_state.pop(f"draft_redo_{suffix}", None)  # "try again" after the model failed to load
        if everything or one or redo:
            only = redo[0] if redo else None if everything else field
            _stream_draft(backend, suffix, images() if callable(images) else images, only)


def _stream_draft(backend: Backend, suffix: str | int, images: Sequence[Picture], only: str | None) -> None:
    if not ensure_ready(backend):
        failure_notice(backend.status(), key=f"draft_retry_{suffix}", on_click=st.session_state.update,
                       kwargs={"retry_model": True, f"draft_redo_{suffix}": (only,)})  # fmt: skip
        return
    st.button(tr("chat.stop"), icon=":material/stop_circle:", key=f"draft_stop_{suffix}")  # a click reruns: it stops
    language = st.session_state.get(f"language_{suffix}") or reply_language()
    notes, name = st.session_state.get(f"notes_{suffix}", ""), st.session_state.get(f"name_{suffix}", "")
    with st.status(tr("draft.reading"), expanded=True) as box:
        bar, shown = st.progress(0.0), st.empty()
        try:
            run = read_sheet(backend, images, notes, language, only=only, name="" if only == "name" else name,
                             on_progress=lambda phase: box.update(label=say(phase)))  # fmt: skip
        except UserError as exc:
            box.update(label=say(exc), state="error")
            return
        wanted = 1 if only else len(FIELDS)
        try:
            for i, _chunk in enumerate(run):
                st.session_state[f"draft_partial_{suffix}"] = (run.text, only)  # kept if Stop ends the run
                if i % PROGRESS_EVERY == 0:
                    found = len(parse_draft(run.text, only).found)
                    bar.progress(min(found / wanted, 1.0), text=tr("draft.progress", found=found, total=wanted))
                    shown.code(run.text[-1200:], language="json", wrap_lines=True)  # a code block: never markup
        except UserError as exc:
            box.update(label=say(exc), state="error")
            st.session_state.pop(f"draft_partial_{suffix}", None)
            return
        finally:
            run.close()
    st.session_state.pop(f"draft_partial_{suffix}", None)
    st.session_state[f"draft_done_{suffix}"] = (run.text, only)
    st.rerun()
