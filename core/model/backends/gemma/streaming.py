"""The plumbing between `model.generate` on the model thread and a reader on another thread.

`TokenStreamer` turns tokens into text chunks as they are decoded and times the first one, and
carries progress phases from the model thread to the reader; `stop_criterion` ends generation at
the next step once a stop is asked for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from core.base.i18n import Text
from core.model.backend import GenerationStats
from core.model.backends.inprocess import Pipe


class TokenStreamer:
    """Streams text as each token is decoded (not word by word), for `model.generate(streamer=…)`.

    It re-decodes the tokens since the last newline and emits what is new, holding back only an
    incomplete multi-byte character, so the concatenated chunks equal the decoded reply. It also
    notes when the first new token arrived and keeps `stats.new_tokens` current while streaming.
    """

    def __init__(self, tokenizer: Any, stats: GenerationStats) -> None:
        self._tokenizer, self._stats = tokenizer, stats
        self._pipe = Pipe()
        self._prompt_seen = False
        self._tokens: list[int] = []
        self._printed = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt
            self._prompt_seen = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        ids = value.reshape(-1).tolist()
        self._stats.new_tokens += len(ids)
        self._tokens.extend(ids)
        text = self._tokenizer.decode(self._tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return  # half of a multi-byte character: wait for the rest
        self._emit(text[self._printed :])
        if text.endswith("\n"):
            self._tokens, self._printed = [], 0
        else:
            self._printed = len(text)

    def end(self) -> None:
        if self._tokens:
            text = self._tokenizer.decode(self._tokens, skip_special_tokens=True)
            self._emit(text[self._printed :])
            self._tokens, self._printed = [], 0
        self._pipe.end()

    def _emit(self, text: str) -> None:
        if text:
            self._pipe.put(text)

    def phase(self, phase: Text) -> None:
        """Tell the reader what the model is busy with before the first token (from the model thread)."""
        self._pipe.put(phase)

    def items(self, tick: float) -> Iterator[str | Text | None]:
        """Text chunks and phases as they come, and None whenever `tick` seconds pass without either."""
        return self._pipe.items(tick)


def stop_criterion(event: threading.Event) -> Any:
    """A `StoppingCriteria` that ends generation at the next decoding step once `event` is set.

    Built on call so importing this module does not import torch or transformers."""
    import torch
    from transformers import StoppingCriteria

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StopOnEvent()
