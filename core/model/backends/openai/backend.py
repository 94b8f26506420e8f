"""A model behind an OpenAI-compatible server: vLLM, Ollama, llama.cpp, LM Studio, OpenRouter, `transformers serve`.

The same replies as the in-process model, through the official `openai` client: the character
prefix (instruction + sheets, byte-identical every turn so a server's prefix cache can hit) and the
story, fitted to the context by the shared policy; the sheets as JPEG data URIs no larger than the
model sees (896 px for Gemma 3). Stop closes the stream, which makes the server stop generating.
Nothing here imports torch: a small app host can serve a big model elsewhere.

The parts, each with one job: `server` (is it there, which models, the status pages show), `vision`
(does the model see pictures), `estimate` (tokens without the tokenizer), `request` (the request
body, pictures as data URIs, the sampler extras), `reader` (the server on a thread of its own, and
what one event carries), `errors` (failures as instructions). This module puts them together.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from core.base.i18n import Text
from core.base.settings import Settings
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
from core.model.backends.openai import errors, request
from core.model.backends.openai.errors import Malformed
from core.model.backends.openai.estimate import TokenEstimate
from core.model.backends.openai.reader import BODY_LIMIT, DONE, Reader, Stopped, Trace, keep_body, read_chunk, within
from core.model.backends.openai.server import ServerCheck
from core.model.backends.openai.vision import Vision
from core.model.context import fit
from core.model.prompts import CharacterPrompt, build_messages

log = logging.getLogger("refsheet.remote")
CONNECT_TIMEOUT = 10.0
# A reply's end, as servers say it: "stop" (TGI: the end-of-sequence token or a stop sequence) is the
# only complete one, "length" the longest reply; anything else ended it early.
COMPLETE = frozenset({"stop", "eos_token", "stop_sequence"})
FAILED = frozenset({"abort", "aborted", "cancelled", "canceled", "error"})
# A server that ignores `max_tokens` is cut off here: the longest reply asked for, and some room
# (chunks are a token or more each; a token is rarely longer than this many characters).
LENGTH_MARGIN, CHARS_PER_TOKEN = 16, 32


class OpenAIBackend:
    """The `Backend` for a model served over the OpenAI chat-completions API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        parts = urlsplit(settings.api_base)
        # A user name and password in the address (some reverse proxies want them) go as HTTP Basic
        # credentials, as they always did, and nowhere else: shown and logged, the address is `base`.
        self.base = errors.public(settings.api_base)
        self._address = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self._credentials = None
        if "@" in parts.netloc:
            self._credentials = (unquote(parts.username or ""), unquote(parts.password or ""))
        self._secrets = tuple(s for s in (settings.api_key, *(self._credentials or ())) if s)
        self.server = ServerCheck(settings, self._client, lambda exc: self._translate(exc, chat=False),
                                  self._known_failure)  # fmt: skip
        self.vision = Vision()
        self.estimate = TokenEstimate(settings.api_image_tokens)
        self.data_uri = request.DataURIs(settings.api_image_side)
        self.sampler_extras = request.SamplerExtras()

    @property
    def prepared(self) -> bool:
        return self.vision.sees is True

    def status(self) -> BackendStatus:
        return self.server.status()

    def prepare(self, progress: Progress | None = None) -> None:
        """Ask the server for its models, then whether the model sees pictures, the clock ticking
        (a page's Stop acts there); each within its own limit."""
        report = Reporter(progress, time.perf_counter())
        report(Text("model.phase.connect", {"base": self.base}))
        self.vision.forget()
        status = self.server.check(tick=report)
        if status.error is not None:
            raise status.error
        self._probe_vision(tick=report)
        if self.vision.sees is False:
            raise self._no_vision()

    def context_limit(self) -> int | None:
        """REFSHEET_CONTEXT_TOKENS if set, else what the server reports (vLLM does), else unknown."""
        return self.settings.context_tokens or self.server.max_model_len

    def warm(self, tag: str, prefix: Callable[[], CharacterPrompt]) -> None:
        """Nothing: a server's prefix cache is its own (llama.cpp keeps one prompt per slot, so a
        warm-up request would push out the conversation it holds), and a request costs its tokens."""

    def count_tokens(self, request: ReplyRequest) -> int:
        return self.estimate(build_messages(request.prefix, request.history)[0])

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
        report(Text("progress.server", {"host": urlsplit(self.base).netloc or self.base}))
        state: dict[str, Any] = {"first_at": None, "chunks": 0, "estimate": 0, "messages": []}
        if self.vision.sees is None and request.prefix.sheets:
            try:
                self._probe_vision(tick=report, stop=stop)
            except Stopped:
                stats.stopped, stats.finish = True, "user"
                return
        if self.vision.sees is False:
            raise self._no_vision()
        try:
            try:
                yield from self._attempt(request, stop, report, stats, state)
            except ContextOverflow as exc:
                # Our estimate was short and the server said by how much: learn it and fit again, once.
                if state["chunks"] or exc.needed is None or not state["messages"] or self.context_limit() is None:
                    raise
                self.estimate.learn(exc.needed, state["messages"])
                yield from self._attempt(request, stop, report, stats, state)
        finally:
            finished = time.perf_counter()
            stats.total_s = finished - started
            stats.new_tokens = stats.new_tokens or state["chunks"]
            if not stats.prompt_tokens:  # no count from the server (or not yet): our estimate, said as such
                stats.prompt_tokens = stats.prefilled_tokens = state["estimate"]
                stats.estimated = True
            if (first_at := state["first_at"]) is not None and finished > first_at:
                stats.ttft_s = first_at - started
                stats.tokens_per_s = max(stats.new_tokens - 1, 0) / (finished - first_at)

    def _attempt(
        self, reply: ReplyRequest, stop: threading.Event, report: Reporter, stats: GenerationStats, state: dict
    ) -> Iterator[str]:
        """One request: fit, send, and pass the words on while the clock ticks between them. A reply
        is complete only when the server says it stopped (`finish_reason: "stop"`); Stop, a server
        gone silent (no first word within REFSHEET_API_TIMEOUT, then no word for
        REFSHEET_API_STALL_SECONDS: events without words, a model's thinking or keep-alives, are
        not words) or a stream that simply ends all leave it unfinished. The clock ticks at least
        once a second whatever comes (the reply row's claim is renewed there, and a page's Stop acts
        there). A server that ignores the longest reply asked for is cut off there."""
        if (limit := self.context_limit()) is not None:
            messages, images, stats.dropped_turns = fit(reply, self.estimate, limit)
        else:
            messages, images = build_messages(reply.prefix, reply.history)
        state["estimate"] = self.estimate(messages)
        state["messages"] = messages
        events: queue.Queue[Any] = queue.Queue()
        extras = self.sampler_extras(reply.sampler)
        if reply.continuation and self.sampler_extras.taken:
            extras |= {"continue_final_message": True, "add_generation_prompt": False}
        body = request.body(self.settings.api_model, messages, images, reply.sampler, self.data_uri, reply.continuation)
        reader = Reader(lambda trace: self._client(trace, None), body, self.sampler_extras, extras, events)
        reader.start()
        heard = time.monotonic()  # the request went out, or the last word came
        longest = reply.sampler.max_new_tokens + max(LENGTH_MARGIN, reply.sampler.max_new_tokens // 10)
        room = longest * CHARS_PER_TOKEN  # characters, for a server that sends whole paragraphs at once
        finish: str | None = None
        wordless = False  # events came since the last word, but no words (thinking, keep-alives)
        try:
            while True:
                if stop.is_set():
                    stats.stopped, stats.finish = True, "user"
                    return
                silent = time.monotonic() - heard
                allowed = self.settings.api_stall_seconds if state["chunks"] else self.settings.api_timeout
                if silent >= allowed:
                    code = "server_wordless" if wordless else "server_silent"
                    raise self._failed(BackendError(code, base=self.base, seconds=int(silent)), reader) from None
                try:
                    item = events.get(timeout=min(0.5, allowed - silent))
                except queue.Empty:
                    report()  # the clock ticks while the server thinks (and the reply row stays claimed)
                    continue
                if item is DONE:
                    break
                if isinstance(item, BaseException):
                    if finish is not None:  # it had said how the reply ended: only its [DONE] was lost
                        break
                    raise self._failed(self._translate(item, during_reply=reader.opened), reader, item) from item
                try:
                    text, ended, usage = read_chunk(item)
                    if usage is not None:
                        self._account(usage, stats, messages)
                except Malformed as exc:
                    raise self._failed(self._translate(exc, during_reply=True), reader, exc) from None
                finish = ended or finish
                if not text:  # thinking, a keep-alive, the counts: no word, but the clock ticks
                    wordless = True
                    report(None if state["chunks"] else Text("progress.thinking"))
                    continue
                heard, wordless = time.monotonic(), False
                cut = state["chunks"] >= longest or len(text) >= room  # a server that ignores max_tokens
                if cut:
                    log.warning("model server %s ignored max_tokens (%d): the reply was cut there", self.base,
                                reply.sampler.max_new_tokens)  # fmt: skip
                    text = text[:room] if state["chunks"] < longest else ""
                room -= len(text)
                if text:
                    state["first_at"] = state["first_at"] or time.perf_counter()
                    state["chunks"] += 1
                    report.current = Text("progress.writing", {"tokens": state["chunks"]})
                    yield text
                if cut:
                    stats.finish = "length"
                    return
            if finish is None:  # the stream ended without saying why: the reply may have been cut short
                raise self._failed(BackendError("server_incomplete", base=self.base), reader)
            stats.finish = "stop" if finish in COMPLETE else finish if finish == "length" else ""
            if not stats.finish:
                raise self._failed(self._ended(finish), reader)
        finally:
            reader.close()  # closing the stream is what tells the server to stop generating

    def _ended(self, finish: str) -> BackendError:
        """A reply the server ended early, for its own reason (a filter, an abort, a tool call…)."""
        if finish == "content_filter":
            return BackendError("finish_filtered", base=self.base)
        reason = errors.shorten(errors.redact(finish, self._secrets), 40)
        return BackendError("finish_failed" if finish in FAILED else "finish_other", base=self.base, reason=reason)

    def _failed(self, error: Exception, reader: Reader, cause: BaseException | None = None) -> Exception:
        """A failure, logged once for whoever runs the server (the server, the code, the status and
        request id where there are any; never the key or anything the user wrote). A context that
        was too short is not one: it is fitted again."""
        if not isinstance(error, ContextOverflow):
            log.warning("model server %s failed during a reply: %s%s", self.base,
                        getattr(error, "code", type(error).__name__), errors.request_info(cause))  # fmt: skip
        reader.close()
        return error

    def _account(self, usage: dict[str, int], stats: GenerationStats, messages: list[dict[str, Any]]) -> None:
        """The server's own counts: prompt and completion tokens, and what its prefix cache held."""
        stats.prompt_tokens = usage["prompt_tokens"]
        stats.new_tokens = usage["completion_tokens"]
        stats.prefilled_tokens = max(0, stats.prompt_tokens - usage["cached_tokens"])
        stats.cache = "server" if usage["cached_tokens"] else "cold"
        if stats.prompt_tokens and messages:
            self.estimate.learn(stats.prompt_tokens, messages)

    # -- pictures -------------------------------------------------------------------------------------
    def _probe_vision(self, tick: Callable[[], None] | None = None, stop: threading.Event | None = None) -> None:
        """Ask whether the model sees pictures, within REFSHEET_API_TIMEOUT in all, the clock
        ticking (`tick`). A "no" is shown by pages as the model's failure; a failure to ask (a server
        that does not answer, say) too, and it is logged."""
        try:
            ask = lambda trace: self.vision.probe(self._client(trace, None), self.settings.api_model, self.data_uri)  # noqa: E731
            self.vision.seen(within(ask, self.settings.api_timeout, tick, stop))
        except Stopped:
            raise
        except Exception as exc:
            error = self._translate(exc)  # a refused picture is the model not seeing: not raised
            if self.vision.sees is not False:
                self.server.record(BackendStatus("failed", self.server.where, error=error, remote=True), exc)
                raise error from exc
        if self.vision.sees is False:  # the chat shows it with its retry button
            self.server.record(BackendStatus("failed", self.server.where, error=self._no_vision(), remote=True))

    def _known_failure(self) -> BackendError | None:
        return self._no_vision() if self.vision.sees is False else None

    def _no_vision(self) -> BackendError:
        return BackendError("no_vision", model=self.settings.api_model)

    # -- the client and its failures ------------------------------------------------------------------
    def _translate(
        self, exc: BaseException, *, during_reply: bool = False, chat: bool = True
    ) -> BackendError | ContextOverflow:
        """`exc` as an instruction; `chat`: a chat request's failure (a refused picture there means
        the model does not see pictures)."""
        error = errors.translate(exc, self.base, self.settings.api_model, self.server.available(),
                                 during_reply=during_reply, secrets=self._secrets)  # fmt: skip
        if chat and isinstance(error, BackendError) and error.code == "no_vision":
            self.vision.refused()
        return error

    def _client(self, trace: Trace, read: float | None, answer_limit: int = BODY_LIMIT) -> Any:
        """A client for one request: its own connection, never kept alive or shared, its requests
        traced (so a `Hangup` can shut it down), redirects not followed (for the status as for the
        replies: said instead, with where they point), and of anything but an event stream at most
        `answer_limit` bytes read (an error: 64 KB). `read`: the longest wait for any one read (None
        for a reply: its watchdog keeps time, so a slow first token and a silence mid-reply each
        get their own limit)."""
        import httpx2
        import openai

        def traced(request: Any) -> None:
            request.extensions["trace"] = trace

        http = httpx2.Client(
            limits=httpx2.Limits(max_keepalive_connections=0),
            timeout=httpx2.Timeout(connect=CONNECT_TIMEOUT, read=read, write=CONNECT_TIMEOUT, pool=CONNECT_TIMEOUT),
            event_hooks={"request": [traced], "response": [keep_body(answer_limit)]},
            follow_redirects=False,
            auth=httpx2.BasicAuth(*self._credentials) if self._credentials else None,
        )
        return openai.OpenAI(base_url=self._address, api_key=self.settings.api_key or "not-needed",
                             max_retries=0, http_client=http)  # fmt: skip
