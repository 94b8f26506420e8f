"""The one context policy every backend uses: oldest turns out first, starting at a model turn, the
earliest start that fits, found with a few counts however long the conversation."""

from __future__ import annotations

import random

import pytest

from core.base.profile import Profile
from core.base.sampling import SamplerSettings
from core.base.sheets import Picture
from core.model.backend import ContextOverflow, ReplyRequest
from core.model.context import fit
from core.model.prompts import Turn, character_prompt

PREFIX = character_prompt(Profile(name="Aster"), [Picture("0" * 64, b"")])


def _count(messages) -> int:
    """A stand-in tokenizer: a token per character of text, four per image, two per message."""
    return sum(2 + sum(len(i.get("text", "")) if i["type"] == "text" else 4 for i in m["content"]) for m in messages)


def _linear(request: ReplyRequest, limit: int) -> int:
    """The policy spelled out: drop the oldest turn until it fits, then on to the next model turn."""
    from core.model.prompts import build_messages

    budget, history, start = limit - request.sampler.max_new_tokens, list(request.history), 0
    while _count(build_messages(request.prefix, history[start:])[0]) > budget:
        assert start < len(history) - 1
        start += 1
        while start < len(history) - 1 and history[start].role != "assistant":
            start += 1
    return start


def test_the_earliest_start_that_fits_with_few_counts() -> None:
    rng = random.Random(7)
    for _ in range(200):
        turns = [
            Turn("user" if i % 2 == 0 else "assistant", "x" * rng.randint(1, 80)) for i in range(rng.randint(1, 60))
        ]
        if rng.random() < 0.3:  # a deleted message: two turns of one role in a row
            del turns[rng.randrange(len(turns))]
        request = ReplyRequest(PREFIX, tuple(turns), SamplerSettings(max_new_tokens=10))
        whole = _count(fit(request, _count, 10**6)[0])
        limit = rng.randint(whole // 3, whole + 20)
        calls: list[int] = []

        def counting(messages, calls=calls) -> int:
            calls.append(1)
            return _count(messages)

        try:
            expected = _linear(request, limit)
        except AssertionError:
            with pytest.raises(ContextOverflow):
                fit(request, counting, limit)
            continue
        _messages, _images, dropped = fit(request, counting, limit)
        assert dropped == expected
        assert len(calls) <= 2 + len(turns).bit_length()  # not one count per dropped turn


def test_the_reply_being_continued_takes_its_room() -> None:
    turns = tuple(Turn("user" if i % 2 == 0 else "assistant", "y" * 50) for i in range(9))
    request = ReplyRequest(PREFIX, turns, SamplerSettings(max_new_tokens=10))
    limit = _count(fit(request, _count, 10**6)[0]) + 10
    assert fit(request, _count, limit)[2] == 0
    carried = ReplyRequest(PREFIX, turns, SamplerSettings(max_new_tokens=10), continuation="z" * 120)
    assert fit(carried, _count, limit)[2] > 0  # older turns make way for what the reply already says
