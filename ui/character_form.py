"""The character form, one for Create and for the Library's editor: "Read the sheet", the profile
inputs, the character book, and the button that stores them.

What differs is said by the caller: which fields show at first and which wait under "More details",
the values the inputs start from, and what the button says and does. Create keeps its inputs live
(a card or a draft fills them as the user goes); the editor gathers them in one `st.form`, sent by
its Save.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from core.base.lore import Lorebook
from core.base.sheets import Picture
from core.model.backend import Backend
from ui.draft import apply_draft, draft_controls
from ui.language import tr
from ui.profile_form import profile_inputs
from ui.widgets import lore_list


@dataclass(frozen=True)
class Submit:
    """The form's button: its label and icon, and what it does with the profile the inputs hold."""

    label: str
    icon: str
    action: Callable[[dict[str, Any]], None]


def character_form(
    backend: Backend,
    form: str | int,
    pictures: Sequence[Picture] | Callable[[], Sequence[Picture]],
    *,
    fields: Sequence[str],
    values: Mapping[str, Any],
    book: Lorebook,
    submit: Submit,
    more: Sequence[str] = (),
    more_open: bool = False,
    one_form: str | None = None,
) -> None:
    """Draw the form. `form`: where its inputs keep their values (`ui.state.field`); `pictures`: what
    "Read the sheet" reads (or a function that reads them, called only when a draft starts);
    `fields` show first and `more` under "More details" (open with `more_open`); `one_form`: the key
    of an `st.form` that gathers the inputs until the button sends them."""
    apply_draft(form)  # a draft from "Read the sheet" fills the inputs below, before they are drawn
    draft_controls(backend, form, pictures)
    with st.form(one_form) if one_form else contextlib.nullcontext():
        profile = profile_inputs(fields, values, key_suffix=form)
        if more:
            with st.expander(tr("create.more"), expanded=more_open):
                profile |= profile_inputs(more, values, key_suffix=form)
        lore_list(book)  # from an imported card: what the character may draw on
        button = st.form_submit_button if one_form else st.button
        if button(submit.label, type="primary", icon=submit.icon):
            submit.action(profile)
