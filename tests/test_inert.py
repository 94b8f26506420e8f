"""`ui.markdown.inert`, the one door for outside text: read back by a real Markdown parser (CommonMark
with GFM's tables, strikethrough and autolinks, as Streamlit's renderer reads it), no payload makes
an image, a link or HTML; the text still reads as written; a stream is escaped exactly as the whole."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from ui.markdown import Safe, inert, inert_stream

# Every form of Markdown that makes a browser fetch or follow an address, as an attacker writes it.
PAYLOADS = [
    "![x](https://evil.test/p.png)",
    "![x](https:evil.test/p)",  # no slashes: still an image
    "![x](//evil.test/p)",
    "![x][1]\n\n[1]: https:evil.test/p",  # reference-style, the definition anywhere in the text
    "![x][]\n\n[x]: //evil.test/p",
    "[click](https://evil.test)",
    "[click][r]\n\n[r]: https://evil.test",
    '<img src="https://evil.test/p">',
    "<https://evil.test/p>",
    "<a@evil.test>",
    "see https://evil.test/p now",
    "www.evil.com/p",
    "WWW.evil.com",
    "mail mallory@evil.com",
    "\\![x](https://evil.test/p)",  # a backslash before: must not cancel the escape
    "!\\[x](https://evil.test/p)",
    "[^1]\n\n[^1]: https://evil.test",
    "![x](<https://evil.test/p q>)",
    ":red[text] :material/home:",
    "| a | b |\n|---|---|\n| ![x](//evil.test) | [y](https:evil.test) |",
    "*![x](//evil.test)*",
    "`code` ![x](https:evil.test)",
]


def parser() -> MarkdownIt:
    md = MarkdownIt("gfm-like")
    md.linkify.set({"fuzzy_link": True, "fuzzy_email": True, "fuzzy_ip": True})
    return md


GFM_LITERAL = re.compile(r"^(?:https?://|www\.|mailto:|xmpp:)|@", re.IGNORECASE)


def active(markdown: str) -> list[str]:
    """The images, links and HTML a renderer would make of `markdown`. Bare words are linked as GFM's
    autolink literals are (`www.`, `http(s)://`, `mailto:`, `xmpp:`, emails), which is what
    Streamlit's renderer does; linkify's looser guesses (`evil.test/p`) are not counted."""
    found = []
    for token in parser().parse(markdown):
        if token.type in ("html_block", "html_inline"):
            found.append(token.content)
        children = token.children or []
        for i, child in enumerate(children):
            if child.type == "link_open" and child.markup == "linkify":
                shown = children[i + 1].content if i + 1 < len(children) else ""
                if not GFM_LITERAL.search(shown):
                    continue
            if child.type in ("image", "link_open", "html_inline"):
                found.append(f"{child.type} {child.attrs}")
    return found


def text_of(markdown: str) -> str:
    """What a reader sees: the rendered text, without tags."""
    import html

    return html.unescape(re.sub(r"<[^>]+>", "", parser().render(markdown))).strip()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_payload_makes_an_image_a_link_or_html(payload: str) -> None:
    assert active(payload) or ":red" in payload or "code" in payload  # each one is live without the door…
    assert active(inert(payload)) == []  # …and dead behind it


@pytest.mark.parametrize("payload", PAYLOADS)
def test_the_text_reads_as_written(payload: str) -> None:
    if any(mark in payload for mark in "|*`"):
        return  # a table, emphasis or code is meant to change how the text looks
    assert " ".join(text_of(inert(payload)).split()) == " ".join(payload.split())


def test_role_play_markdown_stays_and_money_and_tildes_are_literal() -> None:
    rendered = parser().render(inert("*waves* ~hi~ costs $5 and $6"))
    assert "<em>waves</em>" in rendered and "~hi~" in rendered and "$5 and $6" in rendered


def test_safe_text_is_never_escaped_twice() -> None:
    once = inert("a: [b]")
    assert isinstance(once, Safe) and inert(once) == once


_pieces = st.sampled_from(["!", "[", "]", "(", ")", "//", "https", ":", "w", "ww", "www", ".", "@", "<", ">", "\\",
                           "x", " ", "\n", "~", "$", "evil.test", "*"])  # fmt: skip


@settings(max_examples=300, derandomize=True, deadline=None)
@given(parts=st.lists(st.lists(_pieces, max_size=6).map("".join), max_size=8))
def test_a_stream_is_escaped_exactly_as_the_whole(parts: list[str]) -> None:
    assert "".join(inert_stream(parts)) == inert("".join(parts))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(text=st.lists(_pieces, max_size=30).map("".join))
def test_nothing_built_from_the_dangerous_pieces_is_live(text: str) -> None:
    assert active(inert(text)) == []
