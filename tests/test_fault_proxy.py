"""The fault proxy itself (tests/fault_proxy.py): it passes a real server's answers through unchanged,
and each fault breaks the answer on the wire exactly as it says.

Against `transformers serve` (the `openai_server` fixture) and, where that server cannot show a case
(it never sends [DONE], a usage-only event, \\r\\n line endings or a finish_reason other than "length"
at 8 tokens, and answers too fast to see streaming), against a small canned upstream here that frames
its stream as OpenAI's API does.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.fault_proxy import Exchange, Fault, FaultProxy, SSESplitter, fault_proxy

pytestmark = pytest.mark.slow

AUTH = {"Authorization": "Bearer sk-test-not-a-real-key"}


# -- helpers -------------------------------------------------------------------------------------------
@pytest.fixture
def model(tiny_checkpoint: Path) -> str:
    return str(tiny_checkpoint)


@pytest.fixture
def proxy(openai_server: str) -> Iterator[FaultProxy]:
    with fault_proxy(openai_server, models_delay=1.5) as running:
        yield running


def chat(model: str, max_tokens: int = 8) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip


def events(raw: bytes) -> list[bytes]:
    """The events' data payloads (whole events; a trailing unended one too)."""
    splitter = SSESplitter()
    found = [*splitter.feed(raw), splitter.rest()]
    data = []
    for event in found:
        for line in event.splitlines():
            if line.startswith(b"data:"):
                data.append(line[5:].strip())
    return data


def parsed(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(d) for d in events(raw) if d != b"[DONE]"]


def text_of(raw: bytes) -> str:
    return "".join(c["delta"].get("content") or "" for e in parsed(raw) for c in e["choices"])


def finishes(raw: bytes) -> list[str | None]:
    return [c.get("finish_reason") for e in parsed(raw) for c in e["choices"]]


def stream_raw(url: str, body: dict[str, Any], read: float = 10.0) -> tuple[httpx.Response, bytes, Exception | None]:
    """POST and read the whole answer as raw bytes: (response, bytes, the error that ended the read)."""
    got = b""
    client = httpx.Client(timeout=httpx.Timeout(10.0, read=read))
    with client, client.stream("POST", url + "/chat/completions", json=body, headers=AUTH) as response:
        try:
            for piece in response.iter_raw():
                got += piece
        except httpx.HTTPError as exc:
            return response, got, exc
    return response, got, None


def finished(exchange: Exchange) -> Exchange:
    assert exchange.done.wait(5), exchange
    return exchange


# -- a canned upstream that frames its stream as OpenAI does -------------------------------------------
def _sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\r\n\r\n"


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "canned",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip


USAGE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "canned", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}  # fmt: skip
CANNED = [_sse(_chunk({"role": "assistant", "content": ""})), _sse(_chunk({"content": "Hel"})),
          _sse(_chunk({"content": "lo"})), _sse(_chunk({}, "stop")), _sse(USAGE), _sse(b"[DONE]")]  # fmt: skip


class Canned:
    """OpenAI's framing: \\r\\n line ends, a finish_reason "stop", a usage-only event, [DONE]; one HTTP
    chunk per event. The events after the first text wait for `gate`. Records what it was sent."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                canned.seen.append((self.command, self.path, list(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i, event in enumerate(CANNED):
                    if i == 2:
                        canned.gate.wait(10)
                    self.wfile.write(b"%X\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def canned() -> Iterator[Canned]:
    upstream = Canned()
    yield upstream
    upstream.close()


@pytest.fixture
def canned_proxy(canned: Canned) -> Iterator[FaultProxy]:
    with fault_proxy(canned.base_url) as running:
        yield running


# -- passing through -----------------------------------------------------------------------------------
def test_a_stream_passes_through_with_the_same_text(proxy: FaultProxy, openai_server: str, model: str) -> None:
    def reply(base_url: str) -> tuple[str, str | None, Any]:
        client = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0, timeout=30)
        text, finish, usage = "", None, None
        for chunk in client.chat.completions.create(**chat(model)):
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
            usage = chunk.usage or usage
        return text, finish, usage

    direct, proxied = reply(openai_server), reply(proxy.base_url)
    assert proxied == direct and direct[0] and direct[2].completion_tokens == 8
    exchange = finished(proxy.last("chat"))
    assert (exchange.method, exchange.path, exchange.status) == ("POST", "/v1/chat/completions", 200)
    assert exchange.fault is None and exchange.route == "chat"
    assert exchange.authorization and "authorization" not in exchange.headers and exchange.outcome == "complete"
    assert exchange.json()["model"] == model and exchange.json()["stream_options"] == {"include_usage": True}


def test_requests_go_up_unchanged_and_the_stream_comes_down_as_it_comes(canned: Canned, canned_proxy: FaultProxy):
    body = b'{"model": "canned", "messages": [], "stream": true}'
    headers = {**AUTH, "Content-Type": "application/json", "X-Trace": "abc", "OpenAI-Organization": "org-1"}
    canned.gate.clear()  # the upstream holds everything after its first text event
    got = b""
    client = httpx.Client(timeout=httpx.Timeout(10.0, read=3.0))  # less than the upstream holds the rest
    url = canned_proxy.base_url + "/chat/completions?x=1"
    with client, client.stream("POST", url, content=body, headers=headers) as response:
        pieces = response.iter_raw()
        while b"Hel" not in got:
            got += next(pieces)  # arrives while the upstream still holds the rest
        assert not canned.gate.is_set()
        canned.gate.set()
        for piece in pieces:
            got += piece
    assert got == b"".join(CANNED)  # byte for byte, \r\n line ends included
    method, path, sent, sent_body = canned.seen[-1]
    sent_headers = {name.lower(): value for name, value in sent}
    assert (method, path, sent_body) == ("POST", "/v1/chat/completions?x=1", body)
    assert sent_headers["authorization"] == AUTH["Authorization"] and sent_headers["x-trace"] == "abc"
    assert sent_headers["openai-organization"] == "org-1" and sent_headers["content-type"] == "application/json"
    assert finished(canned_proxy.last()).fault is None


# -- the chat stream broken ----------------------------------------------------------------------------
def test_cut_after_first_closes_the_connection_mid_stream(proxy: FaultProxy, model: str) -> None:
    proxy.set_fault("chat", Fault.CUT_AFTER_FIRST)
    response, got, error = stream_raw(proxy.base_url, chat(model))
    assert response.status_code == 200 and isinstance(error, httpx.RemoteProtocolError)
    assert "incomplete chunked read" in str(error)
    assert len(text_of(got)) == 1 and finishes(got) == [None, None]  # the role event, one text event
    assert b"[DONE]" not in got and b"usage" not in got
    exchange = finished(proxy.last("chat"))
    assert exchange.fault == Fault.CUT_AFTER_FIRST and exchange.outcome == "cut"


def test_stall_after_first_keeps_silent_until_the_client_hangs_up(proxy: FaultProxy, model: str) -> None:
    proxy.set_fault("chat", Fault.STALL_AFTER_FIRST)
    got = b""
    with httpx.Client(timeout=httpx.Timeout(10.0, read=3.0)) as client:
        with client.stream("POST", proxy.base_url + "/chat/completions", json=chat(model)) as response:
            pieces = response.iter_raw()
            while not text_of(got):
                got += next(pieces)
            silent_from = time.monotonic()
            with pytest.raises(httpx.ReadTimeout):
                got += next(pieces)
            assert time.monotonic() - silent_from >= 2.9  # not a byte for 3 s
        hung_up = time.monotonic()  # leaving the block, unread, closes the connection
    exchange = proxy.last("chat")
    assert exchange.client_closed.wait(1.0)
    assert exchange.client_closed_at is not None and exchange.client_closed_at - hung_up < 1.0
    assert exchange.stalled_at is not None and abs(exchange.stalled_at - silent_from) < 0.5  # right after it
    assert finished(exchange).outcome == "client-closed" and len(text_of(got)) == 1
    assert proxy.wait_for(lambda: proxy.open_connections == 0, 2)  # its thread and socket are released


def test_stall_before_first_sends_headers_and_nothing_else(proxy: FaultProxy, model: str) -> None:
    proxy.set_fault("chat", Fault.STALL_BEFORE_FIRST)
    with httpx.Client(timeout=httpx.Timeout(10.0, read=1.5)) as client:
        with client.stream("POST", proxy.base_url + "/chat/completions", json=chat(model)) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            with pytest.raises(httpx.ReadTimeout):
                next(response.iter_raw())
        hung_up = time.monotonic()
    exchange = proxy.last("chat")
    assert exchange.client_closed.wait(1.0) and exchange.client_closed_at - hung_up < 1.0
    assert finished(exchange).outcome == "client-closed" and exchange.fault == Fault.STALL_BEFORE_FIRST


def test_malformed_events_end_properly_and_do_not_parse(proxy: FaultProxy, model: str) -> None:
    proxy.set_fault("chat", Fault.MALFORMED_SSE)
    response, got, error = stream_raw(proxy.base_url, chat(model))
    assert error is None and response.status_code == 200  # a proper end of the chunked body
    assert response.headers["content-type"].startswith("text/event-stream")
    assert got.startswith(b'data: {"choices": [{"delta": {"content": "Hel')
    for data in events(got):
        with pytest.raises(ValueError):
            json.loads(data)
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0, timeout=10)
    with pytest.raises(ValueError):  # what the app's client makes of it: json.JSONDecodeError
        list(client.chat.completions.create(**chat(model)))


def test_no_finish_ends_cleanly_without_finish_reason_or_done(proxy, canned_proxy, model: str) -> None:
    _, plain, _ = stream_raw(proxy.base_url, chat(model))
    proxy.set_fault("chat", Fault.NO_FINISH)
    response, got, error = stream_raw(proxy.base_url, chat(model))
    assert error is None and response.status_code == 200
    assert text_of(got) == text_of(plain) and "length" in finishes(plain)
    assert not any(finishes(got)) and b"[DONE]" not in got and b'"usage"' in got  # only the finish is gone
    canned_proxy.set_fault("chat", Fault.NO_FINISH)
    _, canned_got, error = stream_raw(canned_proxy.base_url, chat("canned"))
    assert error is None and b"[DONE]" not in canned_got and b'"stop"' not in canned_got
    assert text_of(canned_got) == "Hello" and not any(finishes(canned_got)) and b"\r\n\r\n" in canned_got
    assert finished(canned_proxy.last()).fault == Fault.NO_FINISH


def test_finish_length_rewrites_the_last_finish_reason(proxy, canned_proxy, model: str) -> None:
    canned_proxy.set_fault("chat", Fault.FINISH_LENGTH)
    _, got, error = stream_raw(canned_proxy.base_url, chat("canned"))
    assert error is None and finishes(got) == [None, None, None, "length"]
    rewritten = [e for e in SSESplitter().feed(got)]
    assert [e for i, e in enumerate(rewritten) if i != 3] == [e for i, e in enumerate(CANNED) if i != 3]
    assert rewritten[3].endswith(b"\r\n\r\n")  # the rewritten event keeps its line ends
    proxy.set_fault("chat", Fault.FINISH_LENGTH)  # the real server's one finish is "length" already
    _, real, error = stream_raw(proxy.base_url, chat(model))
    assert error is None and [f for f in finishes(real) if f] == ["length"] and len(text_of(real)) == 8


def test_no_usage_drops_usage_from_every_event(proxy, canned_proxy, model: str) -> None:
    proxy.set_fault("chat", Fault.NO_USAGE)
    _, got, error = stream_raw(proxy.base_url, chat(model))
    assert error is None and b"usage" not in got and "length" in finishes(got) and len(text_of(got)) == 8
    canned_proxy.set_fault("chat", Fault.NO_USAGE)
    _, canned_got, error = stream_raw(canned_proxy.base_url, chat("canned"))
    assert error is None and b"usage" not in canned_got
    assert events(canned_got)[-1] == b"[DONE]" and len(events(canned_got)) == len(CANNED) - 1  # usage event gone
    assert finishes(canned_got)[-1] == "stop" and text_of(canned_got) == "Hello"


# -- statuses, pages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "status", "kind", "error"),
    [
        (Fault.STATUS_500, 500, "application/json", openai.InternalServerError),
        (Fault.STATUS_502_HTML, 502, "text/html", openai.InternalServerError),
        (Fault.STATUS_429, 429, "application/json", openai.RateLimitError),
        (Fault.STATUS_429_DATE, 429, "application/json", openai.RateLimitError),
        (Fault.STATUS_401, 401, "application/json", openai.AuthenticationError),
        (Fault.HTML_200, 200, "text/html", None),
    ],
)
def test_statuses_and_pages(proxy: FaultProxy, model: str, fault: Fault, status: int, kind: str, error) -> None:
    proxy.set_fault("chat", fault)
    response = httpx.post(proxy.base_url + "/chat/completions", json=chat(model), headers=AUTH, timeout=10)
    assert response.status_code == status and response.headers["content-type"].startswith(kind)
    assert int(response.headers["content-length"]) == len(response.content)
    if kind == "application/json":
        assert set(response.json()["error"]) >= {"message", "type", "code"}
    else:
        assert response.text.lstrip().lower().startswith(("<html", "<!doctype html"))
    if fault == Fault.STATUS_502_HTML:
        assert "<title>502 Bad Gateway</title>" in response.text and response.headers["server"].startswith("nginx")
    if fault == Fault.STATUS_429:
        assert response.headers["retry-after"] == "7"
    if fault == Fault.STATUS_429_DATE:
        when = email.utils.parsedate_to_datetime(response.headers["retry-after"]).timestamp()
        assert 85 <= when - time.time() <= 92
    if fault == Fault.STATUS_401:
        assert response.json()["error"]["code"] == "invalid_api_key"
    exchange = finished(proxy.last("chat"))
    assert (exchange.fault, exchange.status, exchange.authorization) == (fault, status, True)
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0, timeout=10)
    if error is None:  # the app's client reads a 200 HTML page as an empty stream, without an error
        assert list(client.chat.completions.create(**chat(model))) == []
    else:
        with pytest.raises(error):
            client.chat.completions.create(**chat(model))


# -- the model list ------------------------------------------------------------------------------------
def test_models_faults(proxy: FaultProxy, openai_server: str, model: str) -> None:
    real = httpx.get(openai_server + "/models", timeout=10)
    assert model in [m["id"] for m in real.json()["data"]]

    def get() -> tuple[httpx.Response, float]:
        started = time.monotonic()
        return httpx.get(proxy.base_url + "/models", headers=AUTH, timeout=10), time.monotonic() - started

    passed, _ = get()
    assert passed.status_code == 200 and passed.json() == real.json()
    proxy.set_fault("models", Fault.MODELS_SLOW)
    slow, took = get()
    assert took >= 1.5 and slow.json() == real.json() and finished(proxy.last("models")).fault == Fault.MODELS_SLOW
    proxy.set_fault("models", Fault.MODELS_SLOW, delay=0.2)
    assert 0.2 <= get()[1] < 1.2  # the delay given, not the proxy's 1.5 s
    proxy.set_fault("models", Fault.MODELS_GARBAGE)
    garbage, _ = get()
    assert garbage.status_code == 200 and garbage.headers["content-type"] == "application/json"
    assert garbage.json() == {"hello": "world"}
    proxy.set_fault("models", Fault.MODELS_HTML_404)
    page, _ = get()
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html") and "<html" in page.text
    proxy.set_fault("models", Fault.MODELS_404_JSON)
    missing, _ = get()
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json" and missing.json()
    assert [e.fault for e in proxy.requests] == [None, Fault.MODELS_SLOW, Fault.MODELS_SLOW, Fault.MODELS_GARBAGE,
                                                 Fault.MODELS_HTML_404, Fault.MODELS_404_JSON]  # fmt: skip


def test_faults_by_route_for_a_number_of_requests_or_everywhere(proxy: FaultProxy, model: str) -> None:
    def chat_status() -> int:
        return httpx.post(proxy.base_url + "/chat/completions", json=chat(model, 2), timeout=10).status_code

    def models_status() -> int:
        return httpx.get(proxy.base_url + "/models", timeout=10).status_code

    proxy.set_fault("chat", Fault.STATUS_500, times=1)
    assert (chat_status(), models_status(), chat_status()) == (500, 200, 200)  # once, on chat only
    proxy.set_fault("*", Fault.STATUS_502_HTML)
    assert (chat_status(), models_status()) == (502, 502)
    proxy.set_fault("models", Fault.MODELS_404_JSON)  # a route's own fault comes before "*"
    assert (chat_status(), models_status()) == (502, 404)
    proxy.clear("models")
    proxy.set_fault("*", Fault.MODELS_GARBAGE)  # "*" brings a fault only where it makes sense
    assert (chat_status(), models_status()) == (200, 200) and proxy.last("models").fault == Fault.MODELS_GARBAGE
    proxy.clear()
    assert (chat_status(), models_status()) == (200, 200) and proxy.last().fault is None
    with pytest.raises(ValueError):
        proxy.set_fault("chat", Fault.MODELS_SLOW)
    with pytest.raises(ValueError):
        proxy.set_fault("models", Fault.STALL_AFTER_FIRST)


# -- shutting down -------------------------------------------------------------------------------------
def test_close_ends_hung_clients_and_joins_its_threads(openai_server: str, model: str) -> None:
    proxy = FaultProxy(openai_server, models_delay=60).start()
    errors: list[BaseException] = []
    idle = httpx.Client(timeout=60)

    def hang(method: str, path: str, **kwargs: Any) -> None:
        try:
            with httpx.Client(timeout=60) as client:
                client.request(method, proxy.base_url + path, **kwargs).read()
        except httpx.HTTPError as exc:
            errors.append(exc)

    hung = [threading.Thread(target=hang, args=("POST", "/chat/completions"), kwargs={"json": chat(model)}),
            threading.Thread(target=hang, args=("GET", "/models"))]  # fmt: skip
    try:
        assert idle.get(proxy.base_url + "/models").status_code == 200  # its connection stays open, idle
        proxy.set_fault("chat", Fault.STALL_AFTER_FIRST)
        proxy.set_fault("models", Fault.MODELS_SLOW)
        for thread in hung:
            thread.start()
        assert proxy.wait_for(lambda: len(proxy.requests) == 3 and any(e.stalled_at for e in proxy.requests), 10)
        assert proxy.open_connections == 3
        started = time.monotonic()
        proxy.close()  # raises if a connection's thread does not end
        assert time.monotonic() - started < 3 and proxy.open_connections == 0
        for thread in hung:
            thread.join(5)
            assert not thread.is_alive()
        assert len(errors) == 2 and all(isinstance(e, httpx.RemoteProtocolError) for e in errors)
        assert all(e.done.is_set() for e in proxy.requests)
        assert [e.outcome for e in proxy.requests] == ["complete", "shutdown", "shutdown"]
    finally:
        proxy.close()
        idle.close()
