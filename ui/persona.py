"""The user's persona, in the sidebar of every page: the name characters call them by, and a line about them."""

from __future__ import annotations

import streamlit as st
from sqlalchemy.engine import Engine

from core.base.errors import UserError
from core.services.users import MAX_PERSONA_DESCRIPTION, MAX_PERSONA_NAME, Actor, save_persona
from ui import state
from ui.language import say, tr


def persona_panel(db: Engine, actor: Actor) -> None:
    """A popover with the persona form; saving changes who every character talks to from the next reply."""
    label = tr("persona.button", name=actor.user_name if actor.user_name != "you" else tr("persona.nobody"))
    popover = st.sidebar.popover(label, icon=":material/face:", width="stretch")
    with popover, st.form(state.key.PERSONA_FORM, border=False):
        st.caption(tr("persona.why", macro="{{user}}"))  # the cards' own spelling, not a placeholder of ours
        name = st.text_input(tr("persona.name"), value=actor.persona.name, max_chars=MAX_PERSONA_NAME,
                             placeholder=actor.display_name or tr("persona.name_placeholder"))  # fmt: skip
        description = st.text_area(tr("persona.description"), value=actor.persona.description,
                                   max_chars=MAX_PERSONA_DESCRIPTION,
                                   placeholder=tr("persona.description_placeholder"))  # fmt: skip
        if st.form_submit_button(tr("common.save"), icon=":material/save:"):
            try:
                save_persona(db, actor, name, description)
            except UserError as exc:
                st.error(say(exc), icon=":material/error:")
            else:
                st.toast(tr("persona.saved"), icon=":material/face:")
                st.rerun()
