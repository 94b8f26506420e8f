"""Whether the model sees pictures: asked, remembered, and asked again after a while.

A "no" comes from the probe (the picture changed nothing) or from a server that refused a picture
in so many words; it holds for `RECHECK_SECONDS` (or until the backend connects again), then the
model is asked again: the server may serve another model by then.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from typing import Any

from core.base.sheets import Picture

RECHECK_SECONDS = 300.0


class Vision:
    """`sees`: None until asked; True or False once a probe (or a refusal) said."""

    def __init__(self) -> None:
        self._sees: bool | None = None
        self._at = 0.0

    @property
    def sees(self) -> bool | None:
        if self._sees is False and time.monotonic() - self._at >= RECHECK_SECONDS:
            self._sees = None  # long enough: ask again
        return self._sees

    def forget(self) -> None:
        self._sees = None  # the server may serve another model by now

    def refused(self) -> None:
        self.seen(False)

    def seen(self, sees: bool) -> None:
        self._sees, self._at = sees, time.monotonic()

    @staticmethod
    def probe(client: Any, model: str, data_uri: Callable[[Picture], str]) -> bool:
        """The same one-token request with and without a small picture: whether the model sees it. A
        server that cannot take images either says so (an error, raised for the caller to translate)
        or, like `transformers serve` with a text-only model, drops them: then both prompts count
        the same."""
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 80, 120)).save(buf, format="PNG")
        probe = Picture(hashlib.sha256(buf.getvalue()).hexdigest(), buf.getvalue())
        text = {"type": "text", "text": "Hi"}
        picture = {"type": "image_url", "image_url": {"url": data_uri(probe)}}
        counts = []
        for content in ([text], [picture, text]):
            answer = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": content}], max_tokens=1, temperature=0
            )
            usage = getattr(answer, "usage", None)
            prompt = getattr(usage, "prompt_tokens", None)
            counts.append(prompt if isinstance(prompt, int) and not isinstance(prompt, bool) else None)
        return None in counts or counts[1] > counts[0]
