"""Profile inputs for Create and Library, one per field and chosen by the field's kind.

The field list and kinds come from the profile definition (`core.base.profile`), so a new profile field
needs only its label (`field.<name>` in `core/base/locales/<lang>.po`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from core.base.i18n import known
from core.base.languages import REPLY_LANGUAGES
from core.base.profile import BY_NAME, ProfileField, join_greetings, split_greetings, split_tags
from ui import state
from ui.language import tr


def profile_inputs(
    names: Sequence[str], values: Mapping[str, Any] | None = None, *, key_suffix: str | int | None = None
) -> dict[str, Any]:
    """Inputs for `names`, filled from `values`; returns what they hold now, as profile values.

    With `key_suffix` each input keeps its state in the session (`ui.state.field`), so a page can fill
    it, as Create does from a card; without, the inputs simply show `values`."""
    values = values or {}
    edited: dict[str, Any] = {}
    for name in names:
        field = BY_NAME[name]
        shown = _shown(field, values.get(name))
        options: dict[str, Any] = {"help": _optional(f"field.{name}.help")}
        if key_suffix is not None:
            kept = state.field(name, key_suffix)
            kept.setdefault(shown)
            options["key"] = kept.key
        edited[name] = _parsed(field, _input(field, shown, options, keyed=key_suffix is not None))
    return edited


def shown_value(name: str, value: Any) -> Any:
    """A profile value as its input holds it (greetings and tags as text)."""
    return _shown(BY_NAME[name], value)


def _input(field: ProfileField, shown: Any, options: dict[str, Any], *, keyed: bool) -> Any:
    label = tr(field.label_key)
    placeholder = _optional(f"field.{field.name}.placeholder")
    if field.kind == "language":
        languages = list(REPLY_LANGUAGES)
        if shown not in languages:
            languages.append(shown)
        index = None if keyed else languages.index(shown)
        return st.selectbox(label, languages, **({} if keyed else {"index": index}), **options)
    value = {} if keyed else {"value": shown}
    if field.kind in ("line", "tags"):
        return st.text_input(label, placeholder=placeholder, **value, **options)
    return st.text_area(label, placeholder=placeholder, **value, **options)


def _shown(field: ProfileField, value: Any) -> Any:
    if field.kind == "greetings":
        return join_greetings(list(value or []))
    if field.kind == "tags":
        return ", ".join(value or [])
    if field.kind == "language":
        return value or "English"
    return value or ""


def _parsed(field: ProfileField, raw: Any) -> Any:
    if field.kind == "greetings":
        return split_greetings(raw or "")
    if field.kind == "tags":
        return split_tags(raw or "")
    return (raw or "").strip() if field.kind != "language" else raw


def _optional(key: str) -> str | None:
    return tr(key) if known(key) else None
