"""Showing user and model text safely in Streamlit, which renders it as Markdown.

Streamlit never renders raw HTML from us (`unsafe_allow_html` stays off), but Markdown image syntax,
`![alt](https://…)`, would make the browser fetch that address the moment a message is shown: a
reply or an imported card could then report to a stranger's server. `inert` escapes the bracket of
every `![`, so no image (inline or by reference) can start; the text reads the same.

Role-play text is Markdown-ish by convention: `*waves*` is an action (italic, kept), but a `~` is a
playful tilde, not strikethrough, and `$5` is money, not TeX. Those two are escaped to stay literal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_LITERAL = str.maketrans({"~": "\\~", "$": "\\$"})


def inert(text: str) -> str:
    return text.replace("![", "!\\[").translate(_LITERAL)


def inert_stream(chunks: Iterable[str]) -> Iterator[str]:
    """`inert` for streamed text, where `!` may end one chunk and `[` begin the next."""
    held = ""
    for chunk in chunks:
        text = held + chunk
        held = "!" if text.endswith("!") else ""
        text = text[:-1] if held else text
        if text:
            yield inert(text)
    if held:
        yield held
