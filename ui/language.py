"""The UI language of this browser session: the sidebar choice, else the browser's locale."""

from __future__ import annotations

import streamlit as st

from core.errors import UserError
from core.i18n import UI_LANGUAGES, Text, t, ui_language_for


def lang() -> str:
    if "ui_lang" not in st.session_state:
        st.session_state.ui_lang = ui_language_for(st.context.locale)
    return st.session_state.ui_lang


def tr(key: str, **params: object) -> str:
    return t(key, lang(), **params)


def say(text: Text | UserError) -> str:
    """A stored sentence or an error, in this viewer's language."""
    return text.message(lang()) if isinstance(text, UserError) else text.render(lang())


def language_switch() -> None:
    lang()
    st.sidebar.selectbox(t("ui.language", lang()), list(UI_LANGUAGES), format_func=UI_LANGUAGES.get, key="ui_lang")
