"""A model behind an OpenAI-compatible server: vLLM, Ollama, llama.cpp, LM Studio, OpenRouter, `transformers serve`.

The same replies as the in-process model, through the official `openai` client: the character
prefix (instruction + sheets, byte-identical every turn so a server's prefix cache can hit) and the
story, fitted to the context by the shared policy; the sheets as JPEG data URIs no larger than the
model sees (896 px for Gemma 3). Stop closes the stream, which makes the server stop generating.
Nothing here imports torch: a small app host can serve a big model elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from core.base.i18n import Text
from core.base.sampling import SamplerSettings
from core.base.settings import Settings
from core.base.sheets import Picture
from core.model.backend import (
    BackendError,
    BackendStatus,
    ContextOverflow,
    GenerationStats,
    OnProgress,
    Progress,
    ReplyRequest,
    ReplyStream,
    Reporter,
)
from core.model.context import fit
from core.model.prompts import CharacterPrompt, build_messages

# What servers say when the model takes no images (llama.cpp without its mmproj, vLLM with a text model…).
NO_VISION = ("image input is not supported", "not a multimodal model", "does not support image", "image_url",
             "mmproj", "vision")  # fmt: skip
CHECK_SECONDS = 30.0  # how long a good "is the server there?" answer is trusted
RECHECK_FAILED_SECONDS = 5.0  # and a bad one
CHECK_TIMEOUT = 5.0
_DONE = object()


class RemoteBackend:
    """The `Backend` for a model served over the OpenAI chat-completions API."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        self.settings = settings
        self._client = client
        self._lock = threading.Lock()
        self._checked: tuple[float, BackendStatus] | None = None
        self._refreshing = False  # a background check is under way
        self._models: list[str] = []
        self._max_model_len: int | None = None
        self._sampler_extras = True  # top_k / repetition_penalty, until the server refuses them
        self._sees_images: bool | None = None  # unknown until the first reply asks
        self._ratio = 1.0  # how the estimate compares with the server's own count, learnt from `usage`
        self._images: OrderedDict[str, str] = OrderedDict()

    @property
    def where(self) -> str:
        return f"{self.settings.api_base} · {self.settings.api_model}"

    @property
    def sees_images(self) -> bool:
        return self._sees_images is not False

    @property
    def prepared(self) -> bool:
        return self._sees_images is True

    # -- status: a cheap check (`GET /models`), never a generation ----------------------------------
    def status(self) -> BackendStatus:
        """The last answer at once; once it is old, asked again in the background (one check at a time),
        so a page never waits on a slow or unreachable server. Only the very first call asks and waits."""
        with self._lock:
            checked = self._checked
            if checked is not None:
                at, status = checked
                fresh = CHECK_SECONDS if status.state == "ready" else RECHECK_FAILED_SECONDS
                if time.monotonic() - at >= fresh and not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._refresh, name="refsheet-server-check", daemon=True).start()
                return status
        return self._check()

    def _refresh(self) -> None:
        try:
            self._check()
        finally:
            with self._lock:
                self._refreshing = False

    def prepare(self, progress: Progress | None = None) -> None:
        if progress is not None:
            progress(Text("model.phase.connect", {"base": self.settings.api_base, "elapsed": 0}))
        self._sees_images = None  # asked again: the server may serve another model by now
        status = self._check()
        if status.error is not None:
            raise status.error
        self._probe_vision()
        if self._sees_images is False:
            raise BackendError("no_vision", model=self.settings.api_model)

    def _check(self) -> BackendStatus:
        try:
            self._models, self._max_model_len = self._list_models()
            if self.settings.api_model not in self._models:
                raise BackendError("unknown_model", model=self.settings.api_model, available=self._available())
            if self._sees_images is False:
                raise BackendError("no_vision", model=self.settings.api_model)
            status = BackendStatus("ready", self.where, remote=True)
        except BackendError as exc:
            status = BackendStatus("failed", self.where, error=exc, remote=True)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes an instruction
            status = BackendStatus("failed", self.where, error=self._translate(exc), remote=True)
        with self._lock:
            self._checked = (time.monotonic(), status)
        return status

    def _list_models(self) -> tuple[list[str], int | None]:
        if not self.settings.api_base or not self.settings.api_model:
            raise BackendError("api_settings")
        listed = self._openai().with_options(timeout=CHECK_TIMEOUT, max_retries=0).models.list()
        ids, lengths = [], {}
        for entry in listed.data:
            ids.append(entry.id)
            extra = entry.model_extra or {}
            meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
            for length in (extra.get("max_model_len"), meta.get("n_ctx")):  # vLLM's, llama.cpp's
                if isinstance(length, int) and length > 0:
                    lengths[entry.id] = length
        return ids, lengths.get(self.settings.api_model)

    def _available(self) -> str:
        shown = ", ".join(self._models[:12]) + (" …" if len(self._models) > 12 else "")
        return shown or "—"

    # -- the context ----------------------------------------------------------------------------------
    def context_limit(self) -> int | None:
        """REFSHEET_CONTEXT_TOKENS if set, else what the server reports (vLLM does), else unknown."""
        return self.settings.context_tokens or self._max_model_len

    warms = False  # see `warm`

    def warm(self, prefix: CharacterPrompt, tag: str = "") -> None:
        """Nothing: a server's prefix cache is its own (llama.cpp keeps one prompt per slot, so a
        warm-up request would push out the conversation it holds), and a request costs its tokens."""

    def count_tokens(self, request: ReplyRequest) -> int:
        return self._estimate(build_messages(request.prefix, request.history)[0])

    def _estimate(self, messages: list[dict[str, Any]]) -> int:
        """Prompt tokens without the model's tokenizer: the images at their fixed count, the text at
        about 4 characters of Latin script a token and a token a character of other scripts, scaled by
        what the server's own counts showed."""
        fixed, text = _parts(messages, self.settings.api_image_tokens)
        return int(fixed + text * self._ratio) + 1

    def _learn(self, actual: int, messages: list[dict[str, Any]]) -> None:
        """Set the text rate from the server's count of a prompt we sent (images count what they count)."""
        fixed, text = _parts(messages, self.settings.api_image_tokens)
        if text > 0 and actual > fixed:
            with self._lock:
                self._ratio = min(max((actual - fixed) / text, 0.25), 8.0)

    # -- a reply --------------------------------------------------------------------------------------
    def stream(
        self, request: ReplyRequest, stop: threading.Event | None = None, on_progress: OnProgress | None = None
    ) -> ReplyStream:
        stats = GenerationStats()
        return ReplyStream(self._chunks(request, stop or threading.Event(), on_progress, stats), stats)

    def _chunks(
        self, request: ReplyRequest, stop: threading.Event, on_progress: OnProgress | None, stats: GenerationStats
    ) -> Iterator[str]:
        started = time.perf_counter()
        report = Reporter(on_progress, started)
        report(Text("progress.server", {"host": urlsplit(self.settings.api_base).netloc or self.settings.api_base}))
        state: dict[str, Any] = {"first_at": None, "chunks": 0, "estimate": 0, "messages": []}
        if self._sees_images is None and request.prefix.sheets:
            self._probe_vision()
        if self._sees_images is False:
            raise BackendError("no_vision", model=self.settings.api_model)
        try:
            try:
                yield from self._attempt(request, stop, report, stats, state)
            except ContextOverflow as exc:
                # Our estimate was short and the server said by how much: learn it and fit again, once.
                if state["chunks"] or exc.needed is None or not state["messages"] or self.context_limit() is None:
                    raise
                self._learn(exc.needed, state["messages"])
                yield from self._attempt(request, stop, report, stats, state)
        finally:
            finished = time.perf_counter()
            stats.total_s = finished - started
            stats.new_tokens = stats.new_tokens or state["chunks"]
            if not stats.prompt_tokens:  # closed before the server's count came: our estimate stands in
                stats.prompt_tokens = stats.prefilled_tokens = state["estimate"]
            if (first_at := state["first_at"]) is not None and finished > first_at:
                stats.ttft_s = first_at - started
                stats.tokens_per_s = max(stats.new_tokens - 1, 0) / (finished - first_at)

    def _attempt(
        self, request: ReplyRequest, stop: threading.Event, report: Reporter, stats: GenerationStats, state: dict
    ) -> Iterator[str]:
        """One request: fit, send, and pass the chunks on while the clock ticks between them."""
        if (limit := self.context_limit()) is not None:
            messages, images, stats.dropped_turns = fit(request, self._estimate, limit)
        else:
            messages, images = build_messages(request.prefix, request.history)
        state["estimate"] = self._estimate(messages)
        state["messages"] = messages
        events: queue.Queue[Any] = queue.Queue()
        extras = self.sampler_extras(request.sampler)
        if request.continuation and self._sampler_extras:
            extras |= {"continue_final_message": True, "add_generation_prompt": False}
        body = self._body(messages, images, request.sampler, request.continuation)
        reader = _Reader(self, body, extras, events)
        reader.start()
        try:
            while True:
                if stop.is_set():
                    stats.stopped = True
                    return
                try:
                    item = events.get(timeout=0.5)
                except queue.Empty:
                    report()  # the clock ticks while the server thinks (and the reply row stays claimed)
                    continue
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise self._translate(item) from item
                if item.usage is not None:
                    self._account(item.usage, stats, messages)
                text = item.choices[0].delta.content if item.choices else None
                if text:
                    state["first_at"] = state["first_at"] or time.perf_counter()
                    state["chunks"] += 1
                    report.current = Text("progress.writing", {"tokens": state["chunks"]})
                    yield text
        finally:
            reader.close()  # closing the stream is what tells the server to stop generating

    def _probe_vision(self) -> None:
        """Whether the model sees pictures, asked once: the same one-token request with and without a
        small picture. A server that cannot take images either says so (an error) or, like
        `transformers serve` with a text-only model, drops them: then both prompts count the same."""
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (200, 80, 120)).save(buf, format="PNG")
        probe = Picture(hashlib.sha256(buf.getvalue()).hexdigest(), buf.getvalue())
        text = {"type": "text", "text": "Hi"}
        picture = {"type": "image_url", "image_url": {"url": self._data_uri(probe)}}
        client = self._openai().with_options(timeout=self.settings.api_timeout, max_retries=0)
        counts = []
        try:
            for content in ([text], [picture, text]):
                answer = client.chat.completions.create(
                    model=self.settings.api_model, messages=[{"role": "user", "content": content}], max_tokens=1,
                    temperature=0,
                )  # fmt: skip
                counts.append(answer.usage.prompt_tokens if answer.usage is not None else None)
        except Exception as exc:
            error = self._translate(exc)  # a refused image sets `_sees_images` to False
            if self._sees_images is not False:
                raise error from exc
        else:
            self._sees_images = None in counts or counts[1] > counts[0]
        if self._sees_images is False:  # the chat shows it as the model's failure, with its retry button
            failed = BackendError("no_vision", model=self.settings.api_model)
            with self._lock:
                self._checked = (time.monotonic(), BackendStatus("failed", self.where, error=failed, remote=True))

    def _account(self, usage: Any, stats: GenerationStats, messages: list[dict[str, Any]]) -> None:
        """The server's own counts: prompt and completion tokens, and what its prefix cache held."""
        stats.prompt_tokens = int(usage.prompt_tokens or 0)
        stats.new_tokens = int(usage.completion_tokens or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        stats.prefilled_tokens = stats.prompt_tokens - cached
        stats.cache = "server" if cached else "cold"
        if stats.prompt_tokens and messages:
            self._learn(stats.prompt_tokens, messages)

    def _body(
        self,
        messages: list[dict[str, Any]],
        images: list[Picture],
        sampler: SamplerSettings,
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
                    content.append({"type": "image_url", "image_url": {"url": self._data_uri(next(queued))}})
                else:
                    content.append({"type": "text", "text": item["text"]})
            converted.append({"role": message["role"], "content": content})
        body: dict[str, Any] = {
            "model": self.settings.api_model,
            "messages": converted + ([{"role": "assistant", "content": continuation}] if continuation else []),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": sampler.max_new_tokens,
            "temperature": sampler.temperature,
        }
        if not sampler.greedy:
            body["top_p"] = sampler.top_p
        if sampler.seed is not None:
            body["seed"] = sampler.seed
        return body

    def sampler_extras(self, sampler: SamplerSettings) -> dict[str, Any]:
        """Top-k and repetition penalty, which vLLM, llama.cpp and OpenRouter take beside the OpenAI
        fields; dropped for good once a server refuses unknown fields (as `transformers serve` does)."""
        with self._lock:
            if not self._sampler_extras:
                return {}
        extras: dict[str, Any] = {}
        if not sampler.greedy and sampler.top_k:
            extras["top_k"] = sampler.top_k
        if sampler.repetition_penalty != 1.0:  # vLLM and OpenRouter's name, then llama.cpp and LM Studio's
            extras["repetition_penalty"] = extras["repeat_penalty"] = sampler.repetition_penalty
        return extras

    def refuses_sampler_extras(self) -> None:
        """This server takes only the OpenAI fields: stop sending the others."""
        with self._lock:
            self._sampler_extras = False

    def _data_uri(self, image: Picture) -> str:
        """The image as the model will see it, at most `api_image_side` pixels a side, as a JPEG data
        URI; made once per image (and identical every time, so a server's prefix cache matches)."""
        with self._lock:
            if image.sha256 in self._images:
                self._images.move_to_end(image.sha256)
                return self._images[image.sha256]
        from PIL import Image

        picture = image.pixels()
        side = self.settings.api_image_side
        picture.thumbnail((side, side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        picture.save(buf, format="JPEG", quality=90)
        uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        with self._lock:
            self._images[image.sha256] = uri
            while len(self._images) > 64:
                self._images.popitem(last=False)
        return uri

    # -- errors as instructions -----------------------------------------------------------------------
    def _translate(self, exc: BaseException) -> BackendError | ContextOverflow:
        import openai

        base, model = self.settings.api_base, self.settings.api_model
        if isinstance(exc, BackendError | ContextOverflow):
            return exc
        if isinstance(exc, openai.APITimeoutError):
            return BackendError("server_timeout", base=base)
        if isinstance(exc, openai.APIConnectionError):
            return BackendError("unreachable", base=base, reason=_cause(exc))
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return BackendError("unauthorized", base=base)
        if isinstance(exc, openai.RateLimitError):
            retry = exc.response.headers.get("retry-after", "") if exc.response is not None else ""
            return BackendError("rate_limited", base=base, seconds=retry if retry.isdigit() else "60")
        message = _message(exc)
        lowered = message.lower()
        if isinstance(exc, openai.NotFoundError) or "pinned to" in lowered or "model not found" in lowered:
            return BackendError("unknown_model", model=model, available=self._available())
        if overflow := _context_overflow(exc, lowered):
            return overflow
        if any(p in lowered for p in NO_VISION):
            self._sees_images = False
            return BackendError("no_vision", model=model)
        if isinstance(exc, openai.APIStatusError):
            key = "server_error" if exc.status_code >= 500 else "server_refused"
            return BackendError(key, base=base, status=exc.status_code, reason=message[:300])
        return BackendError("unreachable", base=base, reason=f"{type(exc).__name__}: {exc}"[:300])

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.settings.api_base,
                api_key=self.settings.api_key or "not-needed",  # local servers take any key
                timeout=self.settings.api_timeout,
                max_retries=0,  # a failure is shown at once, with what to do; the user retries
            )
        return self._client


class _Reader(threading.Thread):
    """Makes the request and reads its stream on its own thread, so the reader of the reply can keep
    a clock (and notice Stop) while the server is silent. `close` ends the stream, also mid-request."""

    def __init__(
        self, backend: RemoteBackend, body: dict[str, Any], extras: dict[str, Any], events: queue.Queue[Any]
    ) -> None:
        super().__init__(name="refsheet-remote", daemon=True)
        self._backend, self._body, self._extras, self._events = backend, body, extras, events
        self._closed = threading.Event()
        self._stream: Any = None

    def run(self) -> None:
        try:
            stream = self._open()
            self._stream = stream
            if self._closed.is_set():
                stream.close()
                return
            for chunk in stream:
                self._events.put(chunk)
            self._events.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the reply's reader
            if not self._closed.is_set():
                self._events.put(exc)

    def _open(self) -> Any:
        import openai

        client = self._backend._openai()
        try:
            return client.chat.completions.create(**self._body, extra_body=self._extras or None)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if self._extras and any(word in _message(exc) for word in (*self._extras, "nexpected field", "xtra")):
                self._backend.refuses_sampler_extras()
                return client.chat.completions.create(**self._body)
            raise

    def close(self) -> None:
        self._closed.set()
        if self._stream is not None:
            with contextlib.suppress(Exception):  # a stream that already broke is closed enough
                self._stream.close()


def _parts(messages: list[dict[str, Any]], image_tokens: int) -> tuple[float, float]:
    """A prompt's tokens in two parts: what is fixed (turn markers, images) and the text's raw estimate."""
    fixed = text = 0.0
    for message in messages:
        fixed += 6  # the turn's markers
        for item in message["content"]:
            if item["type"] == "image":
                fixed += image_tokens + 6  # its soft tokens and the markers around them
            else:
                ascii_chars = sum(1 for ch in item["text"] if ch.isascii())
                text += ascii_chars / 4 + (len(item["text"]) - ascii_chars)
    return fixed, text


def _message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    text = json.dumps(body, ensure_ascii=False) if isinstance(body, dict | list) else str(body or "")
    return f"{getattr(exc, 'message', '') or exc} {text}".strip()


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}"[:200] if cause else str(exc)[:200]


_NUMBERS = [  # the context's size first, then what was asked for
    re.compile(
        r"maximum context length is (\d+) tokens.*?(?:requested|resulted in|contains(?: at least)?) (\d+)", re.S
    ),
    re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)", re.S),  # llama.cpp
]


def _context_overflow(exc: BaseException, lowered: str) -> ContextOverflow | None:
    """A server's "too long for the context" as the same message the in-process model gives."""
    phrases = ("context length", "context_length_exceeded", "exceed_context_size", "exceeds the available context",
               "context size", "context window", "too many tokens", "maximum context")  # fmt: skip
    if not any(p in lowered for p in phrases):
        return None
    if match := _NUMBERS[0].search(lowered):  # vLLM, llama-cpp-python, OpenAI
        return ContextOverflow(int(match.group(2)), int(match.group(1)))
    if match := _NUMBERS[1].search(lowered):  # llama.cpp's server
        return ContextOverflow(int(match.group(1)), int(match.group(2)))
    return ContextOverflow(None, None)
