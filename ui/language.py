"""The UI language of this browser session: the sidebar choice, else the browser's locale.

The choice lives under its own session key, not only under the widget's: Streamlit forgets a
widget's state when the page that drew it is left, so a widget-only choice reset on every page."""

from __future__ import annotations

import streamlit as st

from core.errors import UserError
from core.i18n import UI_LANGUAGES, Text, t, ui_language_for
from core.prompts import DEFAULT_LANGUAGE, reply_language_for

CHOICE = "ui_lang_choice"


def lang() -> str:
    if CHOICE not in st.session_state:
        st.session_state[CHOICE] = ui_language_for(st.context.locale)
    return st.session_state[CHOICE]


def tr(key: str, **params: object) -> str:
    return t(key, lang(), **params)


def say(text: Text | UserError) -> str:
    """A stored sentence or an error, in this viewer's language."""
    return text.message(lang()) if isinstance(text, UserError) else text.render(lang())


def reply_language() -> str:
    """The reply language a new character gets unless told otherwise: the one the user reads."""
    return reply_language_for(lang()) or DEFAULT_LANGUAGE


def _remember() -> None:
    st.session_state[CHOICE] = st.session_state.ui_lang


def language_switch() -> None:
    st.session_state.ui_lang = lang()  # the widget shows the lasting choice on every page
    st.sidebar.selectbox(
        t("ui.language", lang()), list(UI_LANGUAGES), format_func=UI_LANGUAGES.get, key="ui_lang", on_change=_remember
    )
