"""A fault-injecting HTTP proxy in front of a real OpenAI-compatible server, for testing how the app
copes with servers (and the proxies before them) that break the way real ones do.

Standard library only: a `ThreadingHTTPServer` on 127.0.0.1 (a port of its own) that forwards each
request to the upstream with `http.client` and passes the answer back unchanged, a streamed answer
chunk by chunk as it comes, so streaming stays streaming. A fault, set at runtime for a route, changes
that:

    with fault_proxy(openai_server) as proxy:       # proxy.base_url: http://127.0.0.1:PORT/v1
        proxy.set_fault("chat", Fault.STALL_AFTER_FIRST)
        ...                                         # the app, with REFSHEET_API_BASE=proxy.base_url
        exchange = proxy.last("chat")
        assert exchange.client_closed.wait(5)       # the app hung up on the stalled stream

Routes: "chat" (POST …/chat/completions), "models" (GET …/models), "*" (both, where the fault makes
sense: a route's own fault wins). Every request is logged in `proxy.requests` as an `Exchange`; times
there are `time.monotonic()`. Only the Host header is rewritten on the way up (to the upstream's), and
the hop-by-hop headers (Connection, Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade, Proxy-*)
are not forwarded, as by any proxy; the proxy frames its own answers (chunked where the upstream's
length is unknown or the body is rewritten).
"""

from __future__ import annotations

import contextlib
import email.utils
import enum
import http.client
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


class Fault(enum.Enum):
    """How the proxy breaks an answer. The chat faults that read the stream (cut, stall after the
    first, no finish, finish length, no usage) apply only when the upstream answers with an event
    stream; otherwise its answer passes unchanged (and the exchange records no fault)."""

    # -- the chat stream ("chat") --
    CUT_AFTER_FIRST = "cut_after_first"  # the first text event(s), then the TCP connection closes (FIN)
    STALL_AFTER_FIRST = "stall_after_first"  # the first text event(s), then silence, connection open
    # (for both, the proxy closes its connection to the upstream there, so the server stops generating)
    STALL_BEFORE_FIRST = "stall_before_first"  # 200 text/event-stream headers, then silence
    MALFORMED_SSE = "malformed_sse"  # 200 text/event-stream whose events are not JSON, ended properly
    NO_FINISH = "no_finish"  # the real stream, every finish_reason null, no [DONE], ended cleanly
    FINISH_LENGTH = "finish_length"  # the real stream, the last non-null finish_reason made "length"
    NO_USAGE = "no_usage"  # the real stream without `usage` (as llama-cpp-python streams)
    # -- any route --
    STATUS_500 = "status_500"  # OpenAI-style JSON error
    STATUS_502_HTML = "status_502_html"  # nginx's 502 Bad Gateway page
    STATUS_429 = "status_429"  # JSON error, Retry-After: 7
    STATUS_429_DATE = "status_429_date"  # JSON error, Retry-After: an HTTP date 90 s from now
    STATUS_401 = "status_401"  # OpenAI's invalid_api_key JSON error
    HTML_200 = "html_200"  # 200 text/html: a captive portal's page
    # -- the model list ("models") --
    MODELS_SLOW = "models_slow"  # the real answer, after a delay (`models_delay`, 8 s by default)
    MODELS_GARBAGE = "models_garbage"  # 200 application/json {"hello": "world"}
    MODELS_HTML_404 = "models_html_404"  # 404 text/html: a web server without the API at that path
    MODELS_404_JSON = "models_404_json"  # 404 application/json {"detail": "Not Found"} (FastAPI's)


CHAT_ONLY = frozenset({Fault.CUT_AFTER_FIRST, Fault.STALL_AFTER_FIRST, Fault.STALL_BEFORE_FIRST, Fault.MALFORMED_SSE,
                       Fault.NO_FINISH, Fault.FINISH_LENGTH, Fault.NO_USAGE})  # fmt: skip
MODELS_ONLY = frozenset({Fault.MODELS_SLOW, Fault.MODELS_GARBAGE, Fault.MODELS_HTML_404, Fault.MODELS_404_JSON})
# the faults that read the upstream's real stream
STREAM_FAULTS = frozenset({Fault.CUT_AFTER_FIRST, Fault.STALL_AFTER_FIRST, Fault.NO_FINISH, Fault.FINISH_LENGTH,
                           Fault.NO_USAGE})  # fmt: skip
ROUTES = ("chat", "models")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade"})  # fmt: skip

NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"
)
NGINX_404 = (
    b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n"
    b"<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"
)
CAPTIVE_PORTAL = (
    b'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Guest Wi-Fi - Sign in</title></head>\n'
    b"<body>\n<h1>Welcome to Guest Wi-Fi</h1>\n<p>Please accept the terms of use to continue.</p>\n"
    b'<form method="post" action="/login"><button>Accept and connect</button></form>\n</body>\n</html>\n'
)
MALFORMED = (
    b'data: {"choices": [{"delta": {"content": "Hel\n\n'
    b"<<<<garbage>>>> ]]} not an event\n"
    b"%%%%\n\n"
    b"data: ]]]{not json[[[\n\n"
)


def _error(message: str, kind: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


@dataclass
class Exchange:
    """One request through the proxy. Times are `time.monotonic()`."""

    method: str
    path: str  # as the client asked, query included
    route: str | None  # "chat", "models", or None (another path)
    headers: dict[str, str]  # the request's headers, names lower-cased, without Authorization
    authorization: bool  # whether the request carried an Authorization header (its value is not kept)
    body: bytes
    fault: Fault | None = None  # the fault applied (None: passed through unchanged)
    status: int | None = None  # the status the proxy sent (None: it sent none)
    started: float = field(default_factory=time.monotonic)
    stalled_at: float | None = None  # when the proxy went silent (the stall faults)
    client_closed_at: float | None = None  # when the proxy saw the client close its side
    ended_at: float | None = None  # when the proxy was done with the request
    outcome: str = "open"  # complete | cut | client-closed | stall-timeout | upstream-error | shutdown
    client_closed: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


class _ClientGone(Exception):
    """The client closed its side (or the proxy is closing)."""


class _Server(ThreadingHTTPServer):
    """One daemon thread per connection (a test that never closes its proxy cannot hang the run), which
    the proxy joins itself on `close` (ThreadingMixIn joins only non-daemon threads)."""

    daemon_threads = True
    proxy: FaultProxy

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name="fault-proxy-connection", daemon=True)  # fmt: skip
        with self.proxy._lock:
            self.proxy._threads = [t for t in self.proxy._threads if t.is_alive()]
            self.proxy._threads.append(thread)
        thread.start()


class FaultProxy:
    """The proxy. `start()` (or `with`) serves; `close()` ends every request, hung clients included,
    and joins the threads."""

    def __init__(self, upstream: str, *, models_delay: float = 8.0, stall_timeout: float = 600.0,
                 upstream_timeout: float = 600.0) -> None:  # fmt: skip
        """`upstream`: the server's base URL (e.g. http://127.0.0.1:8000/v1). `models_delay`: how long
        MODELS_SLOW waits. `stall_timeout`: how long a stall keeps the connection open before closing it."""
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self.models_delay, self.stall_timeout, self.upstream_timeout = models_delay, stall_timeout, upstream_timeout
        self.requests: list[Exchange] = []
        self._faults: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._upstreams: set[http.client.HTTPConnection] = set()
        self._threads: list[threading.Thread] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life --
    def start(self) -> FaultProxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fault-proxy", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """The upstream's base URL, on the proxy (ends in /v1 where the upstream's does)."""
        return f"http://127.0.0.1:{self.port}{self._prefix}"

    def close(self) -> None:
        """Stops serving, ends every request in flight (stalls, slow answers, idle keep-alive
        connections, waits on the upstream) and joins the threads."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            clients, upstreams = list(self._clients), list(self._upstreams)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for conn in upstreams:
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        deadline = time.monotonic() + 10
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if left := [t for t in self._threads if t.is_alive()]:
            raise RuntimeError(f"fault proxy: {len(left)} connection thread(s) did not end")

    def __enter__(self) -> FaultProxy:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def open_connections(self) -> int:
        """Client connections the proxy still holds."""
        with self._lock:
            return len(self._clients)

    # -- faults --
    def set_fault(self, route: str, fault: Fault, *, times: int | None = None, delay: float | None = None,
                  text_events: int = 1) -> None:  # fmt: skip
        """`route`: "chat", "models" or "*" (every route where the fault makes sense). `times`: only the
        next so many requests on the route (None: until cleared). `delay`: MODELS_SLOW's wait (default
        `models_delay`). `text_events`: how many events carrying text the cut and stall faults let through."""
        if route not in (*ROUTES, "*"):
            raise ValueError(f"unknown route {route!r}: chat, models or *")
        if (route == "models" and fault in CHAT_ONLY) or (route == "chat" and fault in MODELS_ONLY):
            raise ValueError(f"{fault.name} does not apply to {route!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults[route] = {"fault": fault, "times": times, "delay": delay, "text_events": text_events}

    def clear(self, route: str | None = None) -> None:
        """No fault on `route` (None: on any route, "*" included)."""
        with self._lock:
            if route is None:
                self._faults.clear()
            else:
                self._faults.pop(route, None)

    def _take_fault(self, route: str | None) -> dict[str, Any] | None:
        if route is None:
            return None
        foreign = CHAT_ONLY if route == "models" else MODELS_ONLY  # what "*" does not bring to this route
        with self._lock:
            for key in (route, "*"):
                entry = self._faults.get(key)
                if entry is None or (key == "*" and entry["fault"] in foreign):
                    continue
                if entry["times"] is not None:
                    entry["times"] -= 1
                    if entry["times"] <= 0:
                        del self._faults[key]
                return dict(entry)
        return None

    # -- the log --
    def last(self, route: str | None = None) -> Exchange:
        """The newest request (on `route`)."""
        found = [e for e in self.requests if route is None or e.route == route]
        if not found:
            raise LookupError(f"no request on {route or 'any route'} yet")
        return found[-1]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.02)
        return condition()

    # -- bookkeeping for the handlers --
    def _track(self, thing: Any, add: bool) -> None:
        target = self._clients if isinstance(thing, socket.socket) else self._upstreams
        with self._lock:
            (target.add if add else target.discard)(thing)
        if add and self._stopping.is_set() and isinstance(thing, socket.socket):
            with contextlib.suppress(OSError):
                thing.shutdown(socket.SHUT_RDWR)  # accepted as the proxy closed: end it at once

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return kind(self._host, self._port, timeout=self.upstream_timeout)


def route_of(method: str, path: str) -> str | None:
    bare = path.split("?", 1)[0].rstrip("/")
    if method == "POST" and bare.endswith("/chat/completions"):
        return "chat"
    if method == "GET" and bare.endswith("/models"):
        return "models"
    return None


# -- server-sent events --------------------------------------------------------------------------------
_LINE_END = re.compile(rb"\r\n|\n|\r")


class SSESplitter:
    """Splits a byte stream into whole events (each with its lines' own endings and the blank line
    that ends it), keeping every byte; `rest()` is what no blank line ended."""

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0  # where the current event starts
        self._scan = 0  # where the next line starts

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        events = []
        while True:
            match = _LINE_END.search(self._buf, self._scan)
            if match is None or (match.group() == b"\r" and match.end() == len(self._buf)):
                break  # no whole line yet (a lone \r at the end may be half of \r\n)
            empty = match.start() == self._scan
            self._scan = match.end()
            if empty:
                events.append(self._buf[self._pos : self._scan])
                self._pos = self._scan
        if self._pos:
            self._buf, self._scan, self._pos = self._buf[self._pos :], self._scan - self._pos, 0
        return events

    def rest(self) -> bytes:
        rest, self._buf, self._pos, self._scan = self._buf, b"", 0, 0
        return rest


@dataclass
class Event:
    """One event: its lines (content, ending); the JSON of its `data:` lines where it parses."""

    lines: list[tuple[bytes, bytes]]

    @classmethod
    def parse(cls, raw: bytes) -> Event:
        lines, pos = [], 0
        for match in _LINE_END.finditer(raw):
            lines.append((raw[pos : match.start()], match.group()))
            pos = match.end()
        if pos < len(raw):
            lines.append((raw[pos:], b""))
        return cls(lines)

    def data(self) -> Iterator[tuple[int, Any]]:
        """(line index, JSON) of each data line that holds JSON."""
        for i, (line, _) in enumerate(self.lines):
            if line.startswith(b"data:"):
                try:
                    yield i, json.loads(line[5:])
                except ValueError:
                    continue

    @property
    def done(self) -> bool:
        return any(line.startswith(b"data:") and line[5:].strip() == b"[DONE]" for line, _ in self.lines)

    @property
    def has_text(self) -> bool:
        for _, obj in self.data():
            for choice in _choices(obj):
                delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
                if delta.get("content") or (isinstance(choice.get("text"), str) and choice["text"]):
                    return True
        return False

    def finish_reasons(self) -> list[str]:
        return [c["finish_reason"] for _, obj in self.data() for c in _choices(obj) if c.get("finish_reason")]

    def rewrite(self, change: Callable[[Any], bool]) -> bytes:
        """The event with `change` applied to each data line's JSON (in place; it says whether it changed
        anything); lines it did not change stay byte for byte."""
        for i, obj in list(self.data()):
            if change(obj):
                line, end = self.lines[i]
                prefix = b"data: " if line.startswith(b"data: ") else b"data:"
                payload = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
                self.lines[i] = (prefix + payload, end)
        return self.bytes()

    def bytes(self) -> bytes:
        return b"".join(line + end for line, end in self.lines)


def _choices(obj: Any) -> list[dict[str, Any]]:
    choices = obj.get("choices") if isinstance(obj, dict) else None
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _no_finish(obj: Any) -> bool:
    changed = False
    for choice in _choices(obj):
        if choice.get("finish_reason") is not None:
            choice["finish_reason"] = None
            changed = True
    return changed


def _no_usage(obj: Any) -> bool:
    if isinstance(obj, dict) and "usage" in obj:
        del obj["usage"]
        return True
    return False


class StreamRewrite:
    """What a stream fault makes of the upstream's event stream: `feed` gives the bytes to send now and
    whether to stop there (cut or stall); `end` what to send when the upstream ends."""

    def __init__(self, fault: Fault, text_events: int = 1) -> None:
        self.fault, self.text_events = fault, text_events
        self._splitter = SSESplitter()
        self._texts = 0
        self._held: list[Event] = []  # FINISH_LENGTH: from the latest event with a finish_reason on

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = []
        for raw in self._splitter.feed(data):
            sent, stop = self._event(raw)
            out.append(sent)
            if stop:
                return b"".join(out), True
        return b"".join(out), False

    def end(self) -> bytes:
        rest = self._splitter.rest()
        out = b""
        if self._held:
            head, *tail = self._held
            head.rewrite(_to_length)
            out = head.bytes() + b"".join(e.bytes() for e in tail)
            self._held = []
        if rest and self.fault in (Fault.NO_FINISH, Fault.NO_USAGE):  # an unended last event, rewritten too
            sent, _ = self._event(rest)
            return out + sent
        return out + rest

    def _event(self, raw: bytes) -> tuple[bytes, bool]:
        fault, event = self.fault, Event.parse(raw)
        if fault in (Fault.CUT_AFTER_FIRST, Fault.STALL_AFTER_FIRST):
            if event.has_text:
                self._texts += 1
            return raw, self._texts >= self.text_events
        if fault == Fault.NO_FINISH:
            return (b"" if event.done else event.rewrite(_no_finish)), False
        if fault == Fault.NO_USAGE:
            had_usage = any(isinstance(obj, dict) and "usage" in obj for _, obj in event.data())
            rewritten = event.rewrite(_no_usage)
            only_usage = had_usage and all(isinstance(o, dict) and o.get("choices") == [] for _, o in event.data())
            return (b"" if only_usage else rewritten), False  # a usage-only event is not sent at all
        if fault == Fault.FINISH_LENGTH:
            if event.finish_reasons():
                released = b"".join(e.bytes() for e in self._held)
                self._held = [event]
                return released, False
            if self._held:
                self._held.append(event)
                return b"", False
            return raw, False
        return raw, False


def _to_length(obj: Any) -> bool:
    changed = False
    for choice in _choices(obj):
        if choice.get("finish_reason") is not None:
            choice["finish_reason"] = "length"
            changed = True
    return changed


# -- the handler ---------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "fault-proxy"
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, True)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            self.server.proxy._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, _ClientGone):
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    # -- one request --
    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        route = route_of(self.command, self.path)
        exchange = Exchange(self.command, self.path, route, headers, "authorization" in self.headers, body)
        proxy.requests.append(exchange)
        self.exchange = exchange
        entry = proxy._take_fault(route)
        fault = entry["fault"] if entry else None
        try:
            if fault is None or fault in STREAM_FAULTS:
                self._forward(body, entry)
            elif fault == Fault.MODELS_SLOW:
                exchange.fault = fault
                delay = entry["delay"] if entry["delay"] is not None else proxy.models_delay
                if self._wait_for_client(delay):
                    raise _ClientGone
                self._forward(body, None)
            elif fault == Fault.STALL_BEFORE_FIRST:
                exchange.fault = fault
                self._start_stream(200, [("Content-Type", "text/event-stream; charset=utf-8")])
                self._stall()
            elif fault == Fault.MALFORMED_SSE:
                exchange.fault = fault
                self._start_stream(200, [("Content-Type", "text/event-stream; charset=utf-8")])
                for line in MALFORMED.splitlines(keepends=True):
                    self._chunk(line)
                self._write(b"0\r\n\r\n")
                exchange.outcome = "complete"
            else:
                exchange.fault = fault
                self._canned(fault)
        except _ClientGone:
            self.close_connection = True
            if exchange.outcome == "open":
                exchange.outcome = "shutdown" if proxy._stopping.is_set() else "client-closed"
        finally:
            exchange.ended_at = time.monotonic()
            exchange.done.set()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- writing, and noticing the client go --
    def _write(self, data: bytes) -> None:
        if self.server.proxy._stopping.is_set():
            raise _ClientGone
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            self._client_closed()
            raise _ClientGone from exc

    def _chunk(self, data: bytes) -> None:
        if data:  # an empty chunk would end the body
            self._write(b"%X\r\n%s\r\n" % (len(data), data))

    def _client_closed(self) -> None:
        exchange = self.exchange
        if exchange.client_closed_at is None and not self.server.proxy._stopping.is_set():
            exchange.client_closed_at = time.monotonic()
            exchange.client_closed.set()

    def _wait_for_client(self, seconds: float) -> bool:
        """Waits `seconds`, watching the client's socket: True as soon as the client closes it (or the
        proxy closes), False when the time is up."""
        proxy, sock = self.server.proxy, self.connection
        deadline = time.monotonic() + seconds
        while True:
            if proxy._stopping.is_set():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            readable, _, _ = select.select([sock], [], [], min(left, 0.1))
            if readable:
                try:
                    peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    peeked = b""
                if not peeked:
                    self._client_closed()
                    return True
                time.sleep(min(left, 0.1))  # the client sent more (its next request): not a close

    def _stall(self) -> None:
        """Silence, the connection open, until the client closes it (or `stall_timeout`, then the
        proxy closes it, or the proxy closes)."""
        exchange = self.exchange
        exchange.stalled_at = time.monotonic()
        self.close_connection = True
        if self._wait_for_client(self.server.proxy.stall_timeout):
            exchange.outcome = "shutdown" if self.server.proxy._stopping.is_set() else "client-closed"
        else:
            exchange.outcome = "stall-timeout"

    def _head(self, status: int, headers: list[tuple[str, str]], reason: str | None = None) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()  # written at once: wfile is unbuffered
        self.exchange.status = status

    def _start_stream(self, status: int, headers: list[tuple[str, str]]) -> None:
        self._head(status, [("Date", self.date_time_string()), ("Server", "uvicorn"), *headers,
                            ("Transfer-Encoding", "chunked")])  # fmt: skip

    def _canned(self, fault: Fault) -> None:
        json_type = "application/json"
        html_type = "text/html"
        retry_after: list[tuple[str, str]] = []
        if fault == Fault.STATUS_500:
            status, kind, body = 500, json_type, _error("The server had an error while processing your request.",
                                                        "server_error")  # fmt: skip
        elif fault == Fault.STATUS_502_HTML:
            status, kind, body = 502, html_type, NGINX_502
        elif fault in (Fault.STATUS_429, Fault.STATUS_429_DATE):
            status, kind = 429, json_type
            body = _error("Rate limit reached for requests. Please try again later.", "requests", "rate_limit_exceeded")
            when = email.utils.formatdate(time.time() + 90, usegmt=True) if fault == Fault.STATUS_429_DATE else "7"
            retry_after = [("Retry-After", when)]
        elif fault == Fault.STATUS_401:
            status, kind = 401, json_type
            said = ("Incorrect API key provided: sk-te***st. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.")  # fmt: skip
            body = _error(said, "invalid_request_error", "invalid_api_key")
        elif fault == Fault.HTML_200:
            status, kind, body = 200, html_type, CAPTIVE_PORTAL
        elif fault == Fault.MODELS_GARBAGE:
            status, kind, body = 200, json_type, b'{"hello": "world"}'
        elif fault == Fault.MODELS_HTML_404:
            status, kind, body = 404, html_type, NGINX_404
        elif fault == Fault.MODELS_404_JSON:
            status, kind, body = 404, json_type, b'{"detail":"Not Found"}'
        else:  # pragma: no cover - every fault is handled above
            raise AssertionError(fault)
        server = "nginx/1.24.0" if body in (NGINX_502, NGINX_404) else "uvicorn"
        headers = [("Date", self.date_time_string()), ("Server", server), *retry_after]
        if kind == html_type:
            headers.append(("Content-Type", "text/html; charset=utf-8"))
        else:
            headers.append(("Content-Type", kind))
        headers.append(("Content-Length", str(len(body))))
        self._head(status, headers)
        if self.command != "HEAD":
            self._write(body)
        self.exchange.outcome = "complete"

    # -- forwarding --
    def _forward(self, body: bytes, entry: dict[str, Any] | None) -> None:
        proxy, exchange = self.server.proxy, self.exchange
        fault: Fault | None = entry["fault"] if entry else None
        if proxy._stopping.is_set():
            raise _ClientGone
        conn = proxy._connect()
        proxy._track(conn, True)
        try:
            try:
                path = self.path
                conn.putrequest(self.command, path, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() in HOP_BY_HOP or name.lower() in ("host", "content-length"):
                        continue
                    if fault is not None and name.lower() == "accept-encoding":
                        continue  # a stream to rewrite must come uncompressed
                    conn.putheader(name, value)
                if fault is not None:
                    conn.putheader("Accept-Encoding", "identity")
                if body or self.command in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                if proxy._stopping.is_set():
                    raise _ClientGone from exc
                exchange.outcome = "upstream-error"
                reason = f"fault-proxy: the upstream {proxy.upstream} failed: {exc}".encode()
                self._head(502, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(reason)))])
                self._write(reason)
                return
            self._relay(conn, response, entry)
        finally:
            proxy._track(conn, False)
            conn.close()

    def _relay(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, entry: dict[str, Any] | None
    ) -> None:
        exchange = self.exchange
        fault: Fault | None = entry["fault"] if entry else None
        is_stream = (response.getheader("Content-Type") or "").lower().startswith("text/event-stream")
        if fault in STREAM_FAULTS and not is_stream:
            fault = None  # nothing to cut or rewrite: the upstream's answer passes unchanged
        if entry is not None:
            exchange.fault = fault
        rewrite = StreamRewrite(fault, entry["text_events"]) if fault is not None and entry else None
        no_body = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        length = response.getheader("Content-Length")
        chunked = not no_body and (rewrite is not None or length is None)
        headers = []
        for name, value in response.getheaders():
            lowered = name.lower()
            if lowered in HOP_BY_HOP or (chunked and lowered == "content-length"):
                continue
            headers.append((name, value))
        if chunked:
            if self.request_version == "HTTP/1.0":
                chunked, self.close_connection = False, True  # ends when the connection closes
            else:
                headers.append(("Transfer-Encoding", "chunked"))
        if response.getheader("Connection", "").lower() == "close" and not chunked and length is None:
            self.close_connection = True
        self._head(response.status, headers, response.reason)
        send = self._chunk if chunked else self._write
        if no_body:
            exchange.outcome = "complete"
            return
        while True:
            try:
                data = response.read1(65536)
            except (OSError, http.client.HTTPException) as exc:
                if self.server.proxy._stopping.is_set():
                    raise _ClientGone from exc
                exchange.outcome = "upstream-error"  # the upstream broke off: so does the proxy
                self.close_connection = True
                return
            if not data:
                break
            if rewrite is None:
                send(data)
                continue
            out, stop = rewrite.feed(data)
            send(out)
            if stop:
                response.close()
                conn.close()  # the upstream sees its client go, and stops generating
                if fault == Fault.CUT_AFTER_FIRST:
                    exchange.outcome = "cut"  # no last chunk, no [DONE]: the connection just closes
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self._stall()
                return
        if rewrite is not None:
            send(rewrite.end())
        if chunked:
            self._write(b"0\r\n\r\n")
        exchange.outcome = "complete"


@contextlib.contextmanager
def fault_proxy(upstream_base_url: str, **options: Any) -> Iterator[FaultProxy]:
    """A running proxy in front of `upstream_base_url` (options: see `FaultProxy`), closed afterwards."""
    proxy = FaultProxy(upstream_base_url, **options).start()
    try:
        yield proxy
    finally:
        proxy.close()
