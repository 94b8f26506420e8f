"""Showing text from outside (users, cards, files, identity providers, models) in Streamlit's Markdown.

Streamlit never renders raw HTML from us (`unsafe_allow_html` stays off), but it renders Markdown
almost everywhere: messages, captions, toasts, alerts, labels, image captions. An image in that
Markdown makes every browser that shows it fetch the address at once (`![x](https:host/p)`, with no
slashes; `![x](//host/p)`; the reference form `![x][1]` with `[1]: https:host` anywhere in the text),
so a stranger's card or reply could report who looks at it. A link is one click from a lookalike site.

`inert` is the one function every outside string goes through before it reaches the page. It
backslash-escapes, character by character, whatever can start a link, an image, HTML or an autolink:
`\\` (so an escape cannot be undone), `[` `]` (inline and reference links and images, definitions,
footnotes), `<` (HTML, `<https://…>` autolinks), `:` (bare `https:`/`mailto:` autolinks) and `@` (bare
email addresses), and the `.` of `www.`. The text reads the same: an escaped character shows as itself.
Role-play text is Markdown-ish by convention, so `*waves*` stays an action (italic), while `~` (a
playful tilde, not strikethrough) and `$` (money, not TeX) are escaped to stay literal.

Translated messages (`ui.language.tr`, `say`) pass each parameter through `inert` and never the
template, so an error naming a file or a member is as safe as a message. What has been made safe is
a `Safe` string, which is not escaped twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_ACTIVE = re.compile(r"[\\\[\]<:@~$]|(?i:(?<=www)\.)")
_CONTEXT = 3  # characters of lookbehind the pattern uses ("www" before a ".")


class Safe(str):
    """Text ready for Streamlit's Markdown: outside strings in it are inert, ours are as written."""

    __slots__ = ()


def inert(text: str) -> Safe:
    """`text` shown as written, with nothing in it that the browser could fetch or follow."""
    if isinstance(text, Safe):
        return text
    return Safe(_ACTIVE.sub(r"\\\g<0>", text))


def inert_stream(chunks: Iterable[str]) -> Iterator[str]:
    """`inert` for streamed text: each chunk escaped with the few characters before it as context,
    so the output is exactly `inert` of the whole."""
    before = ""
    for chunk in chunks:
        if not chunk:
            continue
        context = before[-_CONTEXT:]
        yield inert(context + chunk)[len(inert(context)) :]
        before = context + chunk
