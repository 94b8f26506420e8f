"""Every UI string, in one small table: English and 简体中文.

`t(key, lang, **params)` formats the string for `lang`, falling back to English. The UI language
(what the app's buttons say) is separate from a character's reply language (what the character
speaks), which lives in `core.prompts`.
"""

from __future__ import annotations

UI_LANGUAGES: dict[str, str] = {"en": "English", "zh": "简体中文"}

STRINGS: dict[str, dict[str, str]] = {
    # Image intake.
    "image.empty": {"en": "“{name}” is empty (0 bytes).", "zh": "“{name}” 是空文件（0 字节）。"},
    "image.too_large": {
        "en": "“{name}” is {size_mb} MB; the limit is {limit_mb} MB. Save it smaller (e.g. as JPEG) and try again.",
        "zh": "“{name}” 有 {size_mb} MB，上限是 {limit_mb} MB。请压缩（例如另存为 JPEG）后重试。",
    },
    "image.not_image": {
        "en": "“{name}” is not an image. Upload a PNG, JPEG, WebP, BMP or GIF.",
        "zh": "“{name}” 不是图片。请上传 PNG、JPEG、WebP、BMP 或 GIF。",
    },
    "image.unsupported": {
        "en": "“{name}” is a {format} image, which is not supported. Upload a PNG, JPEG, WebP, BMP or GIF.",
        "zh": "“{name}” 是 {format} 格式，不受支持。请上传 PNG、JPEG、WebP、BMP 或 GIF。",
    },
    "image.corrupt": {
        "en": "“{name}” is damaged or incomplete and cannot be read. Export it again and re-upload.",
        "zh": "“{name}” 已损坏或不完整，无法读取。请重新导出后再上传。",
    },
    "image.too_many_pixels": {
        "en": "“{name}” is {width}×{height} ({megapixels} megapixels); the limit is {limit} megapixels. "
        "Scale it down and try again.",
        "zh": "“{name}” 为 {width}×{height}（{megapixels} 百万像素），上限为 {limit} 百万像素。请缩小后重试。",
    },
}


def t(key: str, lang: str = "en", **params: object) -> str:
    """The string `key` in `lang` (English if missing there), formatted with `params`."""
    entry = STRINGS.get(key)
    if entry is None:
        return key
    text = entry.get(lang) or entry["en"]
    return text.format(**params) if params else text


def ui_language_for(locale: str | None) -> str:
    """Pick the UI language from a browser locale such as 'zh-CN' or 'en-US'."""
    if locale and locale.lower().startswith("zh"):
        return "zh"
    return "en"
