"""A TEST DOUBLE: a scripted OpenAI-compatible server on loopback, for the faults no real server (and
no proxy in front of one) can be made to commit on demand: events without words for ever, finish
reasons such as `content_filter`, bodies that never end, odd-shaped JSON, redirects, a picture check
that never answers, a key echoed back. Everything else is tested against the real `transformers
serve` through `tests.fault_proxy`.

Standard library sockets only. Each route ("models": GET …/models; "probe": a chat request that does
not stream, as the app's picture check; "chat": a streamed chat request) plays the script named in
`server.script[route]`, one of the `_models_*`, `_probe_*` and `_chat_*` methods below:

    with scripted_server() as server:                 # server.base_url: http://127.0.0.1:PORT/v1
        server.script["chat"] = "wordless_forever"
        ...                                           # the app, with REFSHEET_API_BASE=server.base_url
        assert server.last("chat").closed.wait(3)     # the app hung up

Every connection is logged in `server.calls` as a `Call`: its route, request headers (names lower-cased)
and JSON body, and when the client closed it. A normal answer says "Hello there, traveller." and
stops; the picture check counts 100 more prompt tokens per picture, so the model "sees".
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MODEL = "scripted-model"
WORDS = ["Hello", " there", ",", " traveller", "."]


def event(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(text: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    if text is not None:
        delta["content"] = text
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip


USAGE = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL, "choices": [],
         "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}  # fmt: skip
# Chunks the client builds without checking their shape (each after one good word).
ODD_CHUNKS = {
    "delta_null": {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": None}]},
    "content_not_text": chunk(["a", "b"]),
    "usage_not_a_number": {**USAGE, "usage": {"prompt_tokens": "n/a", "completion_tokens": 5}},
    "finish_not_text": chunk(None, {"type": "stop"}),  # type: ignore[arg-type]
    "choice_not_object": {"id": "c1", "object": "chat.completion.chunk", "choices": ["stop"]},
    "chunk_is_a_list": [1, 2, 3],
}


class Gone(Exception):
    """The client closed the connection."""


@dataclass
class Call:
    route: str
    script: str
    headers: dict[str, str]
    body: dict[str, Any]
    opened: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when the client was seen to hang up
    closed: threading.Event = field(default_factory=threading.Event, repr=False)


class Connection:
    def __init__(self, sock: socket.socket, call: Call) -> None:
        self.sock, self.call = sock, call

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.gone()
            raise Gone from exc

    def gone(self) -> None:
        if self.call.closed_at is None:
            self.call.closed_at = time.monotonic()
            self.call.closed.set()

    def wait(self, seconds: float) -> None:
        """Sleep, noticing the client hang up."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            readable, _, _ = select.select([self.sock], [], [], min(left, 0.05))
            if readable:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.gone()
                    raise Gone

    def head(self, status: str = "200 OK", kind: str = "text/event-stream", extra: tuple[str, ...] = (),
             length: int | None = None, chunked: bool = False) -> None:  # fmt: skip
        lines = [f"HTTP/1.1 {status}", f"Content-Type: {kind}", "Connection: close", "x-request-id: req-SCRIPTED-1",
                 *extra]  # fmt: skip
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def json(self, obj: Any, status: str = "200 OK") -> None:
        body = json.dumps(obj).encode()
        self.head(status, "application/json", length=len(body))
        self.send(body)

    def piece(self, data: bytes) -> None:
        """One chunk of a chunked body."""
        self.send(b"%X\r\n%s\r\n" % (len(data), data))


class ScriptedServer:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"
        self.script = {"models": "normal", "probe": "normal", "chat": "normal"}
        self.redirect_to = ""  # the `redirect` scripts' target base URL
        self.retry_after = "7"  # the `rate_limited` script's Retry-After
        self.calls: list[Call] = []
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> ScriptedServer:
        threading.Thread(target=self._accept, name="scripted-server", daemon=True).start()
        return self

    def close(self) -> None:
        """Stop listening (connections are refused from now on) and end every open one."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (a close alone does not)
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def last(self, route: str) -> Call:
        return next(c for c in reversed(self.calls) if c.route == route)

    def count(self, route: str) -> int:
        return sum(1 for c in self.calls if c.route == route)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                part = sock.recv(65536)
                if not part:
                    return
                data += part
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            while len(body) < int(headers.get("content-length", "0")):
                body += sock.recv(65536)
            request = json.loads(body) if body else {}
            route = "chat" if request.get("stream") else "probe"
            if path.split("?")[0].endswith("/models"):
                route = "models"
            call = Call(route, self.script[route], headers, request)
            self.calls.append(call)
            with contextlib.suppress(Gone, OSError):
                getattr(self, f"_{route}_{call.script}")(Connection(sock, call), request)
        finally:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    # -- GET /v1/models --
    def _models_normal(self, c: Connection, request: dict) -> None:
        c.json({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "test"}]})

    def _models_huge_id(self, c: Connection, request: dict) -> None:
        c.json({"object": "list", "data": [{"id": "X" * 1_000_000, "object": "model"}]})

    def _models_trickle(self, c: Connection, request: dict) -> None:
        """The answer one byte a second: no single read waits long, the whole takes minutes."""
        body = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
        c.head("200 OK", "application/json", length=len(body))
        for byte in body:
            c.wait(1.0)
            c.send(bytes([byte]))

    def _models_redirect(self, c: Connection, request: dict) -> None:
        c.head("307 Temporary Redirect", "text/plain", (f"Location: {self.redirect_to}/models",), 0)

    # -- the picture check (a chat request that does not stream) --
    def _probe_normal(self, c: Connection, request: dict) -> None:
        pictures = sum(1 for m in request["messages"] if isinstance(m["content"], list)
                       for part in m["content"] if part.get("type") == "image_url")  # fmt: skip
        said = {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "length"}
        usage = {"prompt_tokens": 10 + 100 * pictures, "completion_tokens": 1, "total_tokens": 11}
        c.json(
            {"id": "p", "object": "chat.completion", "created": 1, "model": MODEL, "choices": [said], "usage": usage}
        )

    def _probe_silent(self, c: Connection, request: dict) -> None:
        c.wait(3600)  # takes the request, never answers

    def _probe_refuses_pictures(self, c: Connection, request: dict) -> None:
        if any(isinstance(m["content"], list) and len(m["content"]) > 1 for m in request["messages"]):
            c.json({"error": {"message": "image input is not supported - hint: you may need to provide the mmproj"}},
                   "400 Bad Request")  # fmt: skip
        else:
            self._probe_normal(c, request)

    # -- the streamed reply --
    def _words(self, c: Connection, finish: str | None = "stop") -> None:
        c.head()
        for word in WORDS:
            c.send(event(chunk(word)))
            c.wait(0.02)
        if finish is not None:
            c.send(event(chunk(None, finish)))
            c.send(event(USAGE))
            c.send(b"data: [DONE]\n\n")

    def _chat_normal(self, c: Connection, request: dict) -> None:
        self._words(c)

    def _chat_wordless_forever(self, c: Connection, request: dict) -> None:
        """One word, then events without words faster than twice a second, for ever: a thinking
        model's `reasoning_content`, an empty delta, a usage-only chunk, in turn."""
        c.head()
        c.send(event(chunk("Hello")))
        wordless = [chunk(None, reasoning_content="hmm "), chunk(None), USAGE, chunk("")]
        for n in range(100_000):
            c.wait(0.2)
            c.send(event(wordless[n % len(wordless)]))

    def _chat_thinks_then_writes(self, c: Connection, request: dict) -> None:
        """A reasoning model: `reasoning_content` deltas for 14 s (longer than a claim's lease), then the answer."""
        c.head()
        end = time.monotonic() + 14
        while time.monotonic() < end:
            c.send(event(chunk(None, reasoning_content="hmm ")))
            c.wait(0.2)
        self._words(c)

    def _chat_words_forever(self, c: Connection, request: dict) -> None:
        """Ignores max_tokens."""
        c.head()
        for n in range(1_000_000):
            c.send(event(chunk(f" w{n}")))
            c.wait(0.002)

    def _chat_stop_then_cut(self, c: Connection, request: dict) -> None:
        """The whole reply, `finish_reason: "stop"` and the counts, then the connection cut before
        the chunked body's end (and before [DONE])."""
        c.head(chunked=True)
        for obj in [*(chunk(w) for w in WORDS), chunk(None, "stop"), USAGE]:
            c.piece(event(obj))
        c.wait(0.1)
        c.sock.shutdown(socket.SHUT_RDWR)

    def _chat_error_event(self, c: Connection, request: dict) -> None:
        c.head()
        c.send(event(chunk("Hello")))
        c.send(event({"error": {"message": "CUDA out of memory", "type": "server_error", "code": 500}}))

    def _chat_json_error_as_stream(self, c: Connection, request: dict) -> None:
        body = json.dumps({"error": {"message": "The model is overloaded, try later", "code": 503}}).encode()
        c.head("200 OK", "text/event-stream", length=len(body))
        c.send(body)

    def _chat_whole_reply(self, c: Connection, request: dict) -> None:
        """A JSON completion although a stream was asked for."""
        c.json({"id": "p", "object": "chat.completion", "created": 1, "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "A reply."},
                             "finish_reason": "stop"}]})  # fmt: skip

    def _chat_json_error_200(self, c: Connection, request: dict) -> None:
        c.json({"error": {"message": "Model scripted-model is currently loading", "type": "unavailable"}})

    def _chat_endless_page(self, c: Connection, request: dict) -> None:
        """200 text/html whose body never ends, as fast as the client reads."""
        c.head("200 OK", "text/html", chunked=True)
        c.piece(b"<html><head><title>Sign in to the network</title></head><body>")
        while True:
            c.piece(b"<p>" + b"x" * 65536 + b"</p>")

    def _chat_endless_error(self, c: Connection, request: dict) -> None:
        """A 500 whose body never ends."""
        c.head("500 Internal Server Error", "text/html", chunked=True)
        c.piece(b"<html><head><title>Internal error</title></head><body>")
        while True:
            c.piece(b"<p>" + b"x" * 65536 + b"</p>")

    def _chat_overloaded_vision(self, c: Connection, request: dict) -> None:
        """A 503 that mentions the vision encoder: a server error, not a model that cannot see."""
        c.json({"error": {"message": "vision encoder overloaded, retry (image_url)"}}, "503 Service Unavailable")

    def _chat_refuses_pictures(self, c: Connection, request: dict) -> None:
        c.json({"error": {"message": "image input is not supported - hint: you may need to provide the mmproj"}},
               "400 Bad Request")  # fmt: skip

    def _chat_echoes_the_key(self, c: Connection, request: dict) -> None:
        said = f"Invalid request for key {c.call.headers.get('authorization', '')}"
        c.json({"error": {"message": said}}, "400 Bad Request")

    def _chat_redirect(self, c: Connection, request: dict) -> None:
        c.head("307 Temporary Redirect", "text/plain", (f"Location: {self.redirect_to}/chat/completions",), 0)

    def _chat_rate_limited(self, c: Connection, request: dict) -> None:
        body = b'{"error": {"message": "slow down"}}'
        c.head("429 Too Many Requests", "application/json", (f"Retry-After: {self.retry_after}",), len(body))
        c.send(body)

    def __getattr__(self, name: str) -> Any:
        """`_chat_finish_<reason>`: the words, then that finish reason; `_chat_odd_<kind>`: a word, then
        one of `ODD_CHUNKS`, then a normal end."""
        if name.startswith("_chat_finish_"):
            return lambda c, request: self._words(c, name.removeprefix("_chat_finish_"))
        if name.startswith("_chat_odd_"):
            odd = ODD_CHUNKS[name.removeprefix("_chat_odd_")]

            def odd_chunk(c: Connection, request: dict) -> None:
                c.head()
                c.send(event(chunk("Hello")))
                c.send(event(odd))
                c.send(event(chunk(None, "stop")))
                c.send(b"data: [DONE]\n\n")

            return odd_chunk
        raise AttributeError(name)


@contextlib.contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer().start()
    try:
        yield server
    finally:
        server.close()
