"""Showing text from outside (users, cards, files, identity providers, models) in Streamlit's Markdown.

Streamlit never renders raw HTML from us (`unsafe_allow_html` stays off), but it renders Markdown
almost everywhere: messages, captions, toasts, alerts, labels, image captions. An image in that
Markdown makes every browser that shows it fetch the address at once (`![x](https:host/p)`, with no
slashes; `![x](//host/p)`; the reference form `![x][1]` with `[1]: https:host` anywhere in the text),
so a stranger's card or reply could report who looks at it. A link is one click from a lookalike site.

`inert` is the one function every outside string goes through before it reaches the page:
- it backslash-escapes whatever can start an image, a link or HTML: `\\` (so an escape cannot be
  undone), `[` and `]` (inline and reference links and images, their definitions, footnotes), `<`
  (HTML, `<https://…>` autolinks) and `&` (a character reference such as `&#58;` would become a `:`
  before links are looked for);
- it puts an invisible word joiner (U+2060) inside what GitHub-flavoured Markdown would turn into a
  link by itself: between `https:` and `//`, between `www` and `.`, and after `@`. Streamlit's renderer
  finds those in the text *after* escapes are resolved (remark-gfm's autolink literals), so no escape
  can stop them; the joiner shows as nothing, and the address is shown, not linked.
The text reads the same. Role-play text is Markdown-ish by convention, so `*waves*` stays an action
(italic), while `~` (a playful tilde, not strikethrough) and `$` (money, not TeX) are escaped to stay
literal.

A one-line field (a name, a title, a parameter in a sentence) goes through `inert_line`: its line
breaks become spaces and a leading `#`, `>`, `-`, `+`, `*`, `=`, `|` or `1.` is escaped, so a
shared character's name cannot draw a heading, a rule or a quote (a fake notice) on someone's page.
Translated messages (`ui.language.tr`, `say`) pass each parameter through `inert_line` and never the
template, so an error naming a file or a member is as safe as a message. What has been made safe is
a `Safe` string, which is not escaped twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_ESCAPED = re.compile(r"[\\\[\]<&~$]")
_AUTOLINK = re.compile(r"(?i:(?<=https:)|(?<=http:))(?=//)|(?i:(?<=www))(?=\.)|(?<=@)")
JOINER = "\u2060"  # WORD JOINER: zero width, no line break, nothing a reader sees
_CONTEXT = 6  # characters of lookbehind the patterns use ("https:" before "//")


class Safe(str):
    """Text ready for Streamlit's Markdown: outside strings in it are inert, ours are as written."""

    __slots__ = ()


def inert(text: str) -> Safe:
    """`text` shown as written, with nothing in it that the browser could fetch or follow."""
    if isinstance(text, Safe):
        return text
    return Safe(_AUTOLINK.sub(JOINER, _ESCAPED.sub(r"\\\g<0>", text)))


_BREAKS = re.compile(r"\s*[\r\n\v\f\x85\u2028\u2029]\s*")
_BLOCK_START = re.compile(r"^\s*(?:[#>+*=|-]|\d+[.)])")


def inert_line(text: str, *, starts_line: bool = True) -> Safe:
    """`inert` for text shown on one line: line breaks become spaces, and (when it `starts_line`) a
    mark that would start a heading, a quote, a list, a rule or a table is escaped."""
    if isinstance(text, Safe):
        return text
    line = inert(_BREAKS.sub(" ", text))
    return guard_start(line) if starts_line else line


def guard_start(markdown: Safe) -> Safe:
    """`markdown` with a leading block mark (`#`, `>`, `-`, `1.`…) escaped: for a line that begins with
    outside text."""
    if start := _BLOCK_START.match(markdown):
        at = start.end() - 1
        return Safe(f"{markdown[:at]}\\{markdown[at:]}")
    return markdown


def inert_stream(chunks: Iterable[str]) -> Iterator[str]:
    """`inert` for streamed text: each chunk escaped with the few characters before it as context,
    so the output is exactly `inert` of the whole (a joiner that belongs between two chunks is
    written at the start of the second)."""
    before = ""
    for chunk in chunks:
        if not chunk:
            continue
        context = before[-_CONTEXT:]
        yield inert(context + chunk)[len(inert(context)) :]
        before = context + chunk
