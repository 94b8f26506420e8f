"""Shown text never makes the browser fetch an image from elsewhere."""

from __future__ import annotations

import pytest

from ui.markdown import inert, inert_stream

TRAP = "Look ![pixel](https://tracker.invalid/p.png) and ![ref][1]\n\n[1]: https://tracker.invalid/q.png"


def test_image_syntax_is_defused_and_reads_the_same() -> None:
    shown = inert(TRAP)
    assert "![" not in shown
    assert shown.replace("\\", "") == TRAP  # only a backslash was added
    assert inert("Wow! [a link](https://example.org) stays a link") == "Wow! [a link](https://example.org) stays a link"


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_streamed_text_is_defused_across_chunk_boundaries(size: int) -> None:
    chunks = [TRAP[i : i + size] for i in range(0, len(TRAP), size)]
    assert "".join(inert_stream(chunks)) == inert(TRAP)
    assert "".join(inert_stream(["Hi!", "!", ""])) == "Hi!!"


def test_role_play_conventions_keep_their_characters() -> None:
    text = "*waves* Hi~ that is ~so~ cheap: $5, or $x^2$ gold"
    shown = inert(text)
    assert shown.startswith("*waves*")  # an action stays italic
    assert "~" not in shown.replace("\\~", "") and "$" not in shown.replace("\\$", "")  # no strikethrough, no TeX
    assert shown.replace("\\", "") == text
    assert "".join(inert_stream([text[i : i + 3] for i in range(0, len(text), 3)])) == shown
