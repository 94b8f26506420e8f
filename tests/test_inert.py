"""`ui.markdown.inert`, the one door for outside text: read back by a real Markdown parser (CommonMark
with GFM's tables, strikethrough and autolinks, as Streamlit's renderer reads it), no payload makes
an image, a link or HTML; the text still reads as written; a stream is escaped exactly as the whole."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from ui.markdown import JOINER, Safe, inert, inert_line, inert_stream

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
    # Character references become characters before links are looked for.
    "https&#58;//evil.test/a",
    "https&colon;//evil.test/b",
    "https:&#47;&#47;evil.test/c",
    "www&#46;evil.com/e",
    "www&period;evil.com/f",
    "mallory&#64;evil.com",
    "mallory&commat;evil.com",
    "&#33;&#91;x&#93;(https://evil.test/g)",
]


def parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


# remark-gfm (Streamlit's renderer) links bare addresses by matching these on the text *after*
# escapes are resolved (mdast-util-gfm-autolink-literal), so they are checked on that text here.
GFM_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE | re.ASCII)
GFM_EMAIL = re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.ASCII)


def active(markdown: str) -> list[str]:
    """The images, links and HTML a renderer would make of `markdown`: the syntax (CommonMark with
    GFM tables and strikethrough) and GFM's autolink literals (`www.`, `http(s)://`, emails)."""
    found = []
    for token in parser().parse(markdown):
        if token.type in ("html_block", "html_inline"):
            found.append(token.content)
        text = ""
        for child in [*(token.children or []), None]:
            if child is not None and child.type in ("text", "text_special"):
                text += child.content
                continue
            found += [f"autolink {m.group(0)}" for m in (*GFM_URL.finditer(text), *GFM_EMAIL.finditer(text))]
            text = ""
            if child is not None and child.type in ("image", "link_open", "html_inline"):
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
    shown = text_of(inert(payload)).replace(JOINER, "")  # the joiner is zero-width: nobody sees it
    assert " ".join(shown.split()) == " ".join(payload.split())


def test_role_play_markdown_stays_and_money_and_tildes_are_literal() -> None:
    rendered = parser().render(inert("*waves* ~hi~ costs $5 and $6"))
    assert "<em>waves</em>" in rendered and "~hi~" in rendered and "$5 and $6" in rendered


@pytest.mark.parametrize(
    "line",
    [
        "Bob\n\n---\n# Notice from your admins\n> act now",
        "# Big",
        "> quote",
        "- item",
        "1. first",
        "12) twelfth",
        "=== under",
        "| a | b |",
        "+ plus",
        "* star",
    ],
)
def test_a_one_line_field_cannot_draw_blocks(line: str) -> None:
    """A shared character's name must not draw a heading, a rule, a quote or a list on a teammate's page."""
    tokens = [t.type for t in parser().parse(inert_line(line))]
    assert tokens == ["paragraph_open", "inline", "paragraph_close"], tokens
    assert " ".join(text_of(inert_line(line)).split()) == " ".join(line.split())


def test_safe_text_is_never_escaped_twice() -> None:
    once = inert("a: [b]")
    assert isinstance(once, Safe) and inert(once) == once


_pieces = st.sampled_from(["!", "[", "]", "(", ")", "//", "https", "http", "HTTP", ":", "w", "ww", "www", "W", ".",
                           "@", "<", ">", "\\", "x", " ", "\n", "~", "$", "evil.test", "*", "-", "_", "&", "#58;",
                           "&#64;", "&colon;", "&#47;", "&period;", "&#91;"])  # fmt: skip


@settings(max_examples=300, derandomize=True, deadline=None)
@given(parts=st.lists(st.lists(_pieces, max_size=6).map("".join), max_size=8))
def test_a_stream_is_escaped_exactly_as_the_whole(parts: list[str]) -> None:
    assert "".join(inert_stream(parts)) == inert("".join(parts))


@settings(max_examples=300, derandomize=True, deadline=None)
@given(text=st.lists(_pieces, max_size=30).map("".join))
def test_nothing_built_from_the_dangerous_pieces_is_live(text: str) -> None:
    assert active(inert(text)) == []
