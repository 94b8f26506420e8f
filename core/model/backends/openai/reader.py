"""Talking to the server on a thread of its own, so whoever waits keeps a clock, notices Stop and
notices a server gone silent, while that thread blocks on the socket.

Each request has its own connection (nothing kept alive, so it is this request's alone), and its
`Hangup` shuts that connection's socket down: a read blocked on a silent server returns at once,
and the server sees the client leave, which is what makes vLLM, llama.cpp, Ollama and `transformers
serve` stop generating. (Closing the response object alone does not interrupt a read in another
thread.) `Reader` streams a reply; `within` runs any other request (the models, the picture check)
under one deadline for all of it, headers and body included. Of an answer that is not an event
stream (an error, a proxy's page) only the first `BODY_LIMIT` bytes are ever read.
"""

from __future__ import annotations

import contextlib
import functools
import math
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from core.model.backends.openai.errors import Deadline, Malformed, NotAStream, message
from core.model.backends.openai.request import SamplerExtras

DONE = object()  # the stream ended
BODY_LIMIT = 64 * 1024  # what is read of an answer that is not an event stream
HEAD = 4096  # what is kept of a stream's first bytes, to say what it was if no event came
T = TypeVar("T")
Trace = Callable[[str, dict], None]


class Stopped(Exception):
    """Stop was pressed while a request waited for the server."""


class Hangup:
    """The sockets one client opens (httpcore's trace hook notes them) and the streams it reads,
    shut down by `close`, from any thread, whatever the server is doing."""

    def __init__(self) -> None:
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._streams: list[Any] = []

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def trace(self, event: str, info: dict) -> None:
        """httpcore's trace hook: note each connection the client opens."""
        if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                with self._lock:
                    self._sockets.append(sock)
                if self.closed:
                    _shut(sock)

    def adopt(self, stream: Any) -> None:
        """A stream to close too (closing it is what releases it on this side)."""
        with self._lock:
            self._streams.append(stream)
        if self.closed:
            with contextlib.suppress(Exception):
                stream.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sockets, streams = list(self._sockets), list(self._streams)
        for sock in sockets:
            _shut(sock)
        for stream in streams:
            with contextlib.suppress(Exception):  # a stream that already broke is closed enough
                stream.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)


@functools.cache
def _body_stream() -> type:
    import httpx2

    class Body(httpx2.SyncByteStream):
        """A response body read through: at most `limit` bytes (None: all), its first bytes kept."""

        def __init__(self, inner: Any, limit: int | None) -> None:
            self._inner, self._limit, self.head = inner, limit, b""

        def __iter__(self):  # type: ignore[no-untyped-def]
            read = 0
            for part in self._inner:
                if self._limit is not None and read + len(part) >= self._limit:
                    part = part[: self._limit - read]
                if len(self.head) < HEAD:
                    self.head += part[: HEAD - len(self.head)]
                read += len(part)
                yield part
                if self._limit is not None and read >= self._limit:
                    return  # the rest is never read: the connection is closed with the response

        def close(self) -> None:
            self._inner.close()

    return Body


def keep_body(answer_limit: int = BODY_LIMIT) -> Callable[[Any], None]:
    """httpx's response hook: an error, or an answer that is not an event stream, is read at most
    `BODY_LIMIT` bytes far (`answer_limit` for a good answer: a long list of models), so an endless
    page costs no memory; an event stream is read whole, its first bytes kept."""

    def keep(response: Any) -> None:
        kind = response.headers.get("content-type", "").lower()
        good = 200 <= response.status_code < 300
        limit = None if good and "text/event-stream" in kind else answer_limit if good else BODY_LIMIT
        response.stream = _body_stream()(response.stream, limit)

    return keep


def within(call: Callable[[Trace], T], seconds: float, tick: Callable[[], None] | None = None,
           stop: threading.Event | None = None) -> T:  # fmt: skip
    """`call(trace)` (its requests traced by `trace`) on a thread of its own, for at most `seconds`
    in all, whatever the server trickles. Meanwhile `tick` is called twice a second (a clock; a
    page's Stop acts there, and whatever it raises ends the request). On the deadline the
    connection is shut and `Deadline` raised; on `stop`, `Stopped`."""
    hangup = Hangup()
    answer: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def run() -> None:
        try:
            answer.put((True, call(hangup.trace)))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            answer.put((False, exc))

    threading.Thread(target=run, name="refsheet-remote-call", daemon=True).start()
    deadline = time.monotonic() + seconds
    try:
        while True:
            if stop is not None and stop.is_set():
                raise Stopped
            left = deadline - time.monotonic()
            if left <= 0:
                raise Deadline(seconds)
            try:
                ok, value = answer.get(timeout=min(left, 0.5))
            except queue.Empty:
                if tick is not None:
                    tick()
                continue
            if ok:
                return value
            raise value
    finally:
        hangup.close()


class Reader(threading.Thread):
    """Makes the request and puts each chunk, then `DONE` (or the exception), on `events`."""

    def __init__(
        self, client: Callable[[Trace], Any], body: dict[str, Any], extras: SamplerExtras,
        sent: dict[str, Any], events: queue.Queue[Any],
    ) -> None:  # fmt: skip
        """`client(trace)`: an `openai.OpenAI` for this reply alone, its requests traced by `trace`."""
        super().__init__(name="refsheet-remote", daemon=True)
        self._client, self._body, self._extras, self._sent, self._events = client, body, extras, sent, events
        self._hangup = Hangup()
        self.opened = False  # the server answered with a stream: failures from now on cut a reply short

    def run(self) -> None:
        try:
            stream = self._open()
            self._hangup.adopt(stream)
            if self._hangup.closed:
                return
            self.opened = True
            events = 0
            for chunk in stream:
                self._events.put(chunk)
                events += 1
            if not events:
                _said_something_else(stream.response)
            self._events.put(DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the reply's reader
            if not self._hangup.closed:
                self._events.put(exc)

    def _open(self) -> Any:
        """The request with the sampler extras; without them, once, if the server refuses fields. An
        answer that is not an event stream (an HTML page from a proxy) is `NotAStream`."""
        import openai

        client = self._client(self._hangup.trace)
        try:
            stream = client.chat.completions.create(**self._body, extra_body=self._sent or None)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if not (self._sent and any(word in message(exc) for word in (*self._sent, "nexpected field", "xtra"))):
                raise
            self._extras.refused()
            stream = client.chat.completions.create(**self._body)
        response = stream.response
        kind = response.headers.get("content-type", "")
        if "text/event-stream" not in kind.lower():
            first = response.read()[:HEAD].decode("utf-8", "replace")  # at most BODY_LIMIT was read
            stream.close()
            raise NotAStream(response.status_code, kind or "?", first)
        return stream

    def close(self) -> None:
        """End the request now, from any thread, whatever the server is doing."""
        self._hangup.close()


def _said_something_else(response: Any) -> None:
    """An event stream without a single event: if its body was something else (a JSON error sent as
    an event stream), that is what came, said as such."""
    head = getattr(response.stream, "head", b"").strip()
    plain = response.headers.get("content-encoding", "identity").lower() in ("", "identity")
    if plain and head[:1] in (b"{", b"<") and b"data:" not in head:
        raise NotAStream(response.status_code, response.headers.get("content-type", "?"),
                         head.decode("utf-8", "replace"))  # fmt: skip


def read_chunk(item: Any) -> tuple[str, str | None, dict[str, int] | None]:
    """The words, the finish reason and the counts one event carries, each checked for its shape
    (the client builds chunks without checking them): anything else is `Malformed`."""
    from pydantic import BaseModel

    if not isinstance(item, BaseModel):
        raise Malformed(f"an event that is a {type(item).__name__}, not an object")
    choices = getattr(item, "choices", None) or []
    if not isinstance(choices, list):
        raise Malformed("choices is not a list")
    text, finish = "", None
    if choices:
        choice = choices[0]
        if not isinstance(choice, BaseModel):
            raise Malformed("a choice that is not an object")
        delta, finish = getattr(choice, "delta", None), getattr(choice, "finish_reason", None)
        if finish is not None and not isinstance(finish, str):
            raise Malformed("finish_reason is not a string")
        if delta is None and finish is None:
            raise Malformed("a choice without a delta")
        if delta is not None and not isinstance(delta, BaseModel):
            raise Malformed("delta is not an object")
        content = getattr(delta, "content", None)
        if content is not None and not isinstance(content, str):
            raise Malformed("content is not a string")
        text = content or ""
    usage = getattr(item, "usage", None)
    return text, finish, None if usage is None else _counts(usage)


def _counts(usage: Any) -> dict[str, int]:
    """A usage block's counts, as whole numbers (missing ones are 0)."""
    from pydantic import BaseModel

    def count(owner: Any, name: str) -> int:
        value = getattr(owner, name, None)
        if value is None:
            return 0
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise Malformed(f"usage.{name} is not a count")
        return int(value)

    if not isinstance(usage, BaseModel):
        raise Malformed("usage is not an object")
    details = getattr(usage, "prompt_tokens_details", None)
    if details is not None and not isinstance(details, BaseModel):
        raise Malformed("usage.prompt_tokens_details is not an object")
    return {"prompt_tokens": count(usage, "prompt_tokens"), "completion_tokens": count(usage, "completion_tokens"),
            "cached_tokens": count(details, "cached_tokens") if details is not None else 0}  # fmt: skip
