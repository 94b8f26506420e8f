"""Every UI string, in English and 简体中文: one gettext catalog per language, `locales/<lang>.po`.

In a catalog each entry's `msgctxt` is the key the code asks for ("image.empty"), its `msgid` the
English source and its `msgstr` the text in that language; a string that counts ("{count}
conversations") is a plural entry. Both catalogs are read once, at import, with Babel.
`t(key, lang, **params)` formats the string for `lang`, falling back to English. A key that names
no string is never shown: under test (`STRICT`, or REFSHEET_STRICT_STRINGS=1, which tests/conftest.py
sets) it raises `MissingString`; in a running app it is logged once and reads "(text missing)". The UI
language (what the app's buttons say) is separate from a character's reply language (what the
character speaks), which lives in `core.base.languages`.

One catalog, two audiences: the web app's readers set it up with environment variables and
.streamlit/secrets.toml, the desktop app's readers with its first-run screen and its menu. A key may
have a second entry for the desktop, `<key>@desktop` ("model.error.offline@desktop"), with the same
parameters or fewer; `set_audience("desktop")` (the desktop's server does) makes `t` prefer it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

UI_LANGUAGES: dict[str, str] = {"en": "English", "zh": "简体中文"}
LOCALES = Path(__file__).with_name("locales")
STRICT = False  # raise on a key that names no string (tests set REFSHEET_STRICT_STRINGS=1 instead)
TEXT_MISSING = "common.text_missing"  # what a running app shows in its place
AUDIENCES = ("web", "desktop")  # who reads the messages: the first is the default, with no suffix
_log = logging.getLogger(__name__)
_reported: set[str] = set()


class MissingString(LookupError):
    """The code asked for a string no catalog has: a test fails on it, before any person sees it."""


def _read_catalog(lang: str) -> dict[str, tuple[str, ...]]:
    """`lang`'s strings by key, each as its forms: (one, other) where the language has a singular
    ("1 conversation"), else (text,). As in gettext, an entry marked fuzzy or not translated yet is
    left out, so English is shown in its place. A file that is not valid gettext stops the import."""
    with (LOCALES / f"{lang}.po").open("rb") as file:
        catalog = read_po(file, abort_invalid=True)
    strings: dict[str, tuple[str, ...]] = {}
    for message in catalog:
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.context and not message.fuzzy and all(forms):
            strings[message.context] = forms
    return strings


_CATALOGS: dict[str, dict[str, tuple[str, ...]]] = {lang: _read_catalog(lang) for lang in UI_LANGUAGES}
_audience = AUDIENCES[0]


def set_audience(audience: str) -> None:
    """Who reads this process's messages: "web" (the default) or "desktop" (its own wording of what to do)."""
    global _audience
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {AUDIENCES}, not {audience!r}")
    _audience = audience


@dataclass(frozen=True)
class Text:
    """A sentence to show later, in the viewer's language: an i18n key and its parameters.

    Statuses, progress phases and errors carry these instead of finished sentences, so one server
    can tell two viewers the same thing in two languages."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, lang: str = "en") -> str:
        return t(self.key, lang, **self.params)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "params": dict(self.params)}


def known(key: str) -> bool:
    """Whether `key` names a string. The one place a key may not: a stored row read back from a
    database or a backup written by another version. Such a key is checked with `known` where the
    row is read (`core.services.turns.error_of` keeps only a known key, and shows anything else as
    the inert text it is), so `t` is never asked for it."""
    return key in _CATALOGS["en"]


class _Params(dict):
    """A parameter a template names but nobody gave (a stored row from another version) reads "?"."""

    def __missing__(self, key: str) -> str:
        return "?"


def t(key: str, lang: str = "en", **params: object) -> str:
    """The string `key` in `lang` (English if missing there), formatted with `params`; a key that
    names no string is `_missing` (never shown as the key).

    With `count=1` the singular form is used where the language has one ("1 conversation"): our
    catalogs have at most two forms, one and other (English's `plural=(n != 1)`; Chinese has one).
    A missing parameter reads "?": one odd stored row must not break a page. Where the audience is not
    the default one, the key's entry for that audience (`<key>@desktop`) is taken when there is one."""
    keys = (f"{key}@{_audience}", key) if _audience != AUDIENCES[0] else (key,)
    forms = next((found for k in keys if (found := _CATALOGS.get(lang, {}).get(k) or _CATALOGS["en"].get(k))), None)
    if forms is None:
        return _missing(key, lang)
    text = forms[0] if params.get("count") == 1 else forms[-1]
    try:
        return text.format_map(_Params(params))
    except (ValueError, TypeError, IndexError, AttributeError):  # a format spec the value cannot take
        return text.format_map(_Params({name: str(value) for name, value in params.items()}))


def _missing(key: str, lang: str) -> str:
    """A key that names no string: `MissingString` under test; else logged (once a key) and shown as
    "(text missing)" in `lang`, so a person never reads a key."""
    if STRICT or os.environ.get("REFSHEET_STRICT_STRINGS") == "1":
        raise MissingString(key)
    if key not in _reported:
        _reported.add(key)
        _log.error("The UI string %r is in no catalog (core/base/locales); showing a placeholder.", key)
    return t(TEXT_MISSING, lang) if key != TEXT_MISSING else "…"


def ui_language_for(locale: str | None) -> str:
    """Pick the UI language from a browser locale such as 'zh-CN' or 'en-US'."""
    if locale and locale.lower().startswith("zh"):
        return "zh"
    return "en"
