"""The UI language: the person's choice, kept; else the browser's locale.

A choice made in the sidebar is kept three ways: for this browser session (under its own key, not
only the widget's: Streamlit forgets a widget's state when the page that drew it is left), for this
browser (a cookie, so a reload, a new tab or the sign-in page read it), and for the person (their
row: with sign-in it follows them to every browser; without, it is the install's).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.base.errors import UserError
from core.base.i18n import UI_LANGUAGES, Text, t, ui_language_for
from core.base.languages import DEFAULT_LANGUAGE, reply_language_for
from ui import state
from ui.markdown import Safe, guard_start, inert_line

COOKIE = "refsheet_lang"  # this browser's choice (a cookie's name, not a session key)


def lang() -> str:
    if (chosen := state.UI_LANGUAGE.get()) is None:
        saved = st.context.cookies.get(COOKIE) if st.context.cookies else None
        chosen = saved if saved in UI_LANGUAGES else ui_language_for(st.context.locale)
        state.UI_LANGUAGE.set(chosen)
    return chosen


def adopt(saved: str) -> None:
    """The person's saved choice (their row) wins over this browser's, once a session, before anything
    is drawn; a choice made in this session afterwards wins over both."""
    if saved in UI_LANGUAGES and not state.UI_LANGUAGE_ADOPTED.get():
        state.UI_LANGUAGE.set(saved)
    state.UI_LANGUAGE_ADOPTED.set(True)


def tr(key: str, **params: object) -> Safe:
    """The string `key` in this viewer's language, each parameter made inert (a name, a file, a
    provider's claim) and kept to one line, never the template: what it returns is safe to show as
    Markdown. A key that names no string is never shown (`core.base.i18n.t`): a key read back from a
    stored row from elsewhere is checked with `known` where the row is read, and shown as the inert
    text it is there (`core.services.turns.error_of`)."""
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


def language_switch(keep: Callable[[str], object]) -> None:
    """The sidebar's language picker; `keep` saves a choice for the person (their row)."""

    def chosen() -> None:
        picked = state.UI_LANGUAGE_PICK.get(lang())
        state.UI_LANGUAGE.set(picked)
        keep(picked)

    state.UI_LANGUAGE_PICK.set(lang())  # the widget shows the lasting choice on every page
    st.sidebar.selectbox(
        t("ui.language", lang()),
        list(UI_LANGUAGES),
        format_func=UI_LANGUAGES.get,
        key=state.UI_LANGUAGE_PICK.key,
        on_change=chosen,
    )
    if st.context.cookies.get(COOKIE) != lang() and state.UI_LANGUAGE_COOKIE.get() != lang():
        _write_cookie(lang())


def _write_cookie(language: str) -> None:
    """This browser remembers the choice for a year. Streamlit has no call that sets a cookie, so a
    one-line script of ours does (the value is one of our language codes, never anyone's input)."""
    if language not in UI_LANGUAGES:
        return
    script = f"document.cookie = '{COOKIE}={language}; path=/; max-age=31536000; samesite=lax';"
    with st.sidebar:
        st.html(f"<script>{script}</script>", unsafe_allow_javascript=True, width=1)
    state.UI_LANGUAGE_COOKIE.set(language)
