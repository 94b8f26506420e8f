"""The UI string table: every string in both languages, with the same placeholders."""

from __future__ import annotations

import string

from core.base.i18n import STRINGS, UI_LANGUAGES, t


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_string_is_translated_with_the_same_placeholders() -> None:
    problems = []
    for key, entry in STRINGS.items():
        if not set(UI_LANGUAGES) <= set(entry):
            problems.append(f"{key}: missing {set(UI_LANGUAGES) - set(entry)}")
        expected = _fields(entry["en"])
        # A translation naming a placeholder the code does not pass would crash the page.
        problems += [
            f"{key}[{lang}]: {_fields(text) - expected}" for lang, text in entry.items() if _fields(text) - expected
        ]
    assert problems == []


def test_counts_read_naturally() -> None:
    assert t("library.card_meta", "en", language="English", count=1, when="today") == (
        "English · 1 conversation · today"
    )
    assert "3 conversations" in t("library.card_meta", "en", language="English", count=3, when="today")
    assert "1 个对话" in t("library.card_meta", "zh", language="English", count=1, when="today")


def test_unknown_language_falls_back_to_english() -> None:
    assert t("library.title", "fr") == "Character library"
