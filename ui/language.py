"""The UI language of this browser session: the sidebar choice, else the browser's locale.

The choice lives under its own session key, not only under the widget's: Streamlit forgets a
widget's state when the page that drew it is left, so a widget-only choice reset on every page."""

from __future__ import annotations

import streamlit as st

from core.base.errors import UserError
from core.base.i18n import UI_LANGUAGES, Text, known, t, ui_language_for
from core.base.languages import DEFAULT_LANGUAGE, reply_language_for
from ui.markdown import Safe, guard_start, inert_line

CHOICE = "ui_lang_choice"


def lang() -> str:
    if CHOICE not in st.session_state:
        st.session_state[CHOICE] = ui_language_for(st.context.locale)
    return st.session_state[CHOICE]


def tr(key: str, **params: object) -> Safe:
    """The string `key` in this viewer's language, each parameter made inert (a name, a file, a
    provider's claim) and kept to one line, never the template: what it returns is safe to show as
    Markdown. A key that names no string (a stored row from elsewhere) is shown as inert text."""
    if not known(key):
        return inert_line(key)
    shown = Safe(t(key, lang(), **{name: _inert(value) for name, value in params.items()}))
    if guard_start(Safe(t(key, lang()))) != t(key, lang()):
        return shown  # the string itself starts with a block (a numbered list of steps)
    return guard_start(shown)  # a parameter at the start must not make one


def tr_plain(key: str, **params: object) -> str:
    """The string `key` with its parameters as they are: only for plain-text places (placeholders,
    file names), never for Markdown."""
    return t(key, lang(), **params)


def say(text: Text | UserError) -> Safe:
    """A stored sentence or an error, in this viewer's language, its parameters inert."""
    text = text.text if isinstance(text, UserError) else text
    return tr(text.key, **text.params)


def _inert(value: object) -> object:
    if isinstance(value, Text | UserError):
        return say(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return inert_line(value if isinstance(value, str) else str(value), starts_line=False)


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
