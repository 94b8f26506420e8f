"""Fitting a conversation into a model's context: the oldest turns go first, the character never does.

One policy for every backend; each brings its own way of counting tokens (the in-process model
its tokenizer, a server an estimate corrected by what the server reports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.base.sheets import Picture
from core.model.backend import ContextOverflow, ReplyRequest
from core.model.prompts import build_messages, prefix_message

Counter = Callable[[list[dict[str, Any]]], int]  # chat-template messages → prompt tokens


def fit(request: ReplyRequest, count: Counter, limit: int) -> tuple[list[dict[str, Any]], list[Picture], int]:
    """Messages (and their images) that leave room for the reply (and for the reply so far, when one
    is continued), and how many turns were dropped.

    The kept history starts at the first turn, or at a model turn (so the prefix turn stays exactly as
    it was, and its cache valid), or at the last message. Fewer turns never take more tokens, so the
    earliest start that fits is found by bisection: a few counts however long the conversation.
    Raises `ContextOverflow` when even the last message alone does not fit, saying whether the
    character itself is too long."""
    budget = limit - request.sampler.max_new_tokens
    if request.continuation:  # counted as a message of its own: a few template tokens over, never under
        budget -= count([{"role": "user", "content": [{"type": "text", "text": request.continuation}]}])
    history = list(request.history)
    starts = [0, *(i for i in range(1, len(history) - 1) if history[i].role == "assistant")]
    if len(history) > 1:
        starts.append(len(history) - 1)
    tried: dict[int, tuple[list[dict[str, Any]], list[Picture], int]] = {}

    def attempt(start: int) -> tuple[list[dict[str, Any]], list[Picture], int]:
        if start not in tried:
            messages, images = build_messages(request.prefix, history[start:])
            tried[start] = (messages, images, count(messages))
        return tried[start]

    def fits(index: int) -> bool:
        return attempt(starts[index])[2] <= budget

    if fits(0):  # the usual case: everything fits, one count
        return *attempt(0)[:2], 0
    if not fits(len(starts) - 1):
        needed = attempt(starts[-1])[2]
        prefix_alone = count([prefix_message(request.prefix)])
        if prefix_alone > budget:
            raise ContextOverflow(prefix_alone + request.sampler.max_new_tokens, limit, True)
        raise ContextOverflow(needed + request.sampler.max_new_tokens, limit)
    low, high = 1, len(starts) - 1  # starts[0] does not fit and starts[high] does: find the first that does
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    messages, images, _needed = attempt(starts[high])
    return messages, images, starts[high]
