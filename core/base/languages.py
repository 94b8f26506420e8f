"""The reply languages a character can speak (the seed's ten), and the tags cards and browsers write for them."""

from __future__ import annotations

# The seed's ten reply languages: the name shown, and how the instruction names it.
REPLY_LANGUAGES: dict[str, str] = {
    "English": "English",
    "简体中文": "Simplified Chinese (简体中文)",
    "繁體中文": "Traditional Chinese (繁體中文)",
    "日本語": "Japanese (日本語)",
    "한국어": "Korean (한국어)",
    "Français": "French (Français)",
    "Deutsch": "German (Deutsch)",
    "Español": "Spanish (Español)",
    "Русский": "Russian (Русский)",
    "العربية": "Arabic (العربية)",
}
DEFAULT_LANGUAGE = "English"
# Language tags (BCP 47, as cards and browsers write them) for each reply language.
LANGUAGE_TAGS: dict[str, str] = {
    "en": "English", "zh": "简体中文", "zh-cn": "简体中文", "zh-hans": "简体中文", "zh-sg": "简体中文",
    "zh-tw": "繁體中文", "zh-hant": "繁體中文", "zh-hk": "繁體中文", "ja": "日本語", "ko": "한국어",
    "fr": "Français", "de": "Deutsch", "es": "Español", "ru": "Русский", "ar": "العربية",
}  # fmt: skip


def reply_language_for(tag: str) -> str | None:
    """The reply language a tag such as "ja", "zh-TW" or "en_US" names, if it is one of ours."""
    tag = str(tag).strip().lower().replace("_", "-")
    return LANGUAGE_TAGS.get(tag) or LANGUAGE_TAGS.get(tag.split("-")[0])


def language_name(language: str) -> str:
    return REPLY_LANGUAGES.get(language, language or DEFAULT_LANGUAGE)
