"""Fitting a conversation into a model's context: the oldest turns go first, the character never does.

One policy for every backend; each brings its own way of counting tokens (the in-process model
its tokenizer, a server an estimate corrected by what the server reports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.backend import ContextOverflow, ReplyRequest
from core.prompts import PromptImage, build_messages, prefix_message

Counter = Callable[[list[dict[str, Any]]], int]  # chat-template messages → prompt tokens


def fit(request: ReplyRequest, count: Counter, limit: int) -> tuple[list[dict[str, Any]], list[PromptImage], int]:
    """Messages (and their images) that leave room for the reply, and how many turns were dropped.

    Raises `ContextOverflow` when even the last message alone does not fit, saying whether the
    character itself is too long."""
    budget = limit - request.sampler.max_new_tokens
    history = list(request.history)
    start = 0
    while True:
        messages, images = build_messages(request.prefix, history[start:])
        needed = count(messages)
        if needed <= budget:
            return messages, images, start
        if start >= len(history) - 1:
            prefix_alone = count([prefix_message(request.prefix)])
            if prefix_alone > budget:
                raise ContextOverflow(prefix_alone + request.sampler.max_new_tokens, limit, True)
            raise ContextOverflow(needed + request.sampler.max_new_tokens, limit)
        # Drop the oldest turn; keep dropping until the kept history opens with a model turn,
        # so the prefix turn stays exactly as it was (and its cache stays valid).
        start += 1
        while start < len(history) - 1 and history[start].role != "assistant":
            start += 1
