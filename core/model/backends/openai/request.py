"""The request a server gets: the chat in OpenAI's shape, pictures as data URIs, the sampler fields.

The character prefix is byte-identical on every turn (the same JPEG for the same picture, made once),
so a server's prefix cache can reuse it.
"""

from __future__ import annotations

import base64
import io
import threading
from collections import OrderedDict
from typing import Any

from core.base.sampling import SamplerSettings
from core.base.sheets import Picture


class DataURIs:
    """Each picture as the model will see it, at most `side` pixels a side, as a JPEG data URI; made
    once per picture (the newest 64 kept)."""

    def __init__(self, side: int, keep: int = 64) -> None:
        self._side, self._keep = side, keep
        self._made: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, image: Picture) -> str:
        with self._lock:
            if image.sha256 in self._made:
                self._made.move_to_end(image.sha256)
                return self._made[image.sha256]
        from PIL import Image

        picture = image.pixels()
        picture.thumbnail((self._side, self._side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        picture.save(buf, format="JPEG", quality=90)
        uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        with self._lock:
            self._made[image.sha256] = uri
            while len(self._made) > self._keep:
                self._made.popitem(last=False)
        return uri


def body(
    model: str,
    messages: list[dict[str, Any]],
    images: list[Picture],
    sampler: SamplerSettings,
    data_uri: DataURIs,
    continuation: str = "",
) -> dict[str, Any]:
    """The request. A `continuation` goes last as the model's own unfinished turn; vLLM carries it on
    when asked (`continue_final_message`, sent with the sampler extras), llama.cpp by itself."""
    queued = iter(images)
    converted = []
    for message in messages:
        items = message["content"]
        if all(item["type"] == "text" for item in items):  # plain text, as every server takes it
            converted.append({"role": message["role"], "content": "\n\n".join(i["text"] for i in items)})
            continue
        content = []
        for item in items:
            if item["type"] == "image":
                content.append({"type": "image_url", "image_url": {"url": data_uri(next(queued))}})
            else:
                content.append({"type": "text", "text": item["text"]})
        converted.append({"role": message["role"], "content": content})
    request: dict[str, Any] = {
        "model": model,
        "messages": converted + ([{"role": "assistant", "content": continuation}] if continuation else []),
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": sampler.max_new_tokens,
        "temperature": sampler.temperature,
    }
    if not sampler.greedy:
        request["top_p"] = sampler.top_p
    if sampler.seed is not None:
        request["seed"] = sampler.seed
    return request


class SamplerExtras:
    """Top-k and repetition penalty, which vLLM, llama.cpp and OpenRouter take beside the OpenAI
    fields; dropped for good once a server refuses unknown fields (as `transformers serve` does)."""

    def __init__(self) -> None:
        self._taken = True
        self._lock = threading.Lock()

    @property
    def taken(self) -> bool:
        with self._lock:
            return self._taken

    def refused(self) -> None:
        """This server takes only the OpenAI fields: stop sending the others."""
        with self._lock:
            self._taken = False

    def __call__(self, sampler: SamplerSettings) -> dict[str, Any]:
        if not self.taken:
            return {}
        extras: dict[str, Any] = {}
        if not sampler.greedy and sampler.top_k:
            extras["top_k"] = sampler.top_k
        if sampler.repetition_penalty != 1.0:  # vLLM and OpenRouter's name, then llama.cpp and LM Studio's
            extras["repetition_penalty"] = extras["repeat_penalty"] = sampler.repetition_penalty
        return extras
