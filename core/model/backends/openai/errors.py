"""A server's failures as instructions: what went wrong, in words that say what to do.

Pure: `translate` only reads the exception (and what the caller knows: the models the server has,
whether the reply had started, the secrets to keep out). Nothing a server sends reaches a message
raw: an HTML page becomes its first line of text, a JSON error its message, each at most
`TEXT_LIMIT` characters, with the API key (or any Authorization value it echoes) blanked out; and a
server's address is shown without the user name and password it may carry.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import json
import math
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.model.backend import BackendError, ContextOverflow

TEXT_LIMIT = 300  # what a message keeps of anything a server wrote
NAME_LIMIT = 80  # and of a name it gave (a model id, an address)
RETRY_LIMIT = 3600  # the longest wait a `Retry-After` is believed for
REDACTED = "[redacted]"


class NotAStream(Exception):
    """The server answered 200 with something that is not an event stream (a proxy's HTML page, a
    JSON error, a whole reply at once)."""

    def __init__(self, status: int, content_type: str, body: str) -> None:
        self.status, self.content_type, self.body = status, content_type, body
        super().__init__(f"{status} {content_type}: {first_line(body)}")


class Deadline(TimeoutError):
    """A request to the server (its models, the picture check) took longer than it is allowed in all."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"no answer within {seconds:g} s")


class Malformed(ValueError):
    """An event whose JSON is not the shape of a chat-completion chunk."""


# What servers say when the model takes no images, in a refusal of the request (400, 422…):
# llama.cpp without its mmproj, vLLM with a text model, LM Studio, Ollama. A word such as "vision" or
# "image_url" alone says nothing (an error that echoes the request holds "image_url").
NO_VISION = re.compile(
    r"image input is not supported|not a multimodal model|mmproj"
    r"|(?:does not|doesn't|do not|don't|cannot|can't|unable to) (?:support|accept|process|handle|take)"
    r" (?:image|images|image input|image inputs|vision|multimodal)"
    r"|(?:image|images|vision|multimodal)(?: input| inputs| content)? (?:is |are )?not (?:supported|enabled|available)"
)
# Refusals of the request itself (not who is asking, not where, not how often).
_REFUSALS = frozenset(range(400, 500)) - {401, 403, 404, 407, 408, 409, 429}


def public(url: str) -> str:
    """A server's address as it is shown, logged and stored: without the user name and password an
    address may carry (`http://user:secret@host/v1`, as some reverse proxies want), nor its query."""
    parts = urlsplit(url)
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return url
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the secrets it may hold: the API key and the address's password, and any
    `Bearer …` or `Basic …` credential a server echoes."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL.sub(lambda found: f"{found.group(1)} {REDACTED}", text)


_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+(?!\[redacted\])[A-Za-z0-9._~+/=:-]{6,}")


def shorten(text: str, limit: int = NAME_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def translate(
    exc: BaseException, base: str, model: str, available: str, *, during_reply: bool = False,
    secrets: Iterable[str] = (),
) -> BackendError | ContextOverflow:  # fmt: skip
    """The instruction for `exc` (a `no_vision` error means the model cannot see pictures). `base`:
    the address as shown (`public`). `during_reply`: the server had begun answering, so a broken
    connection cut the reply short. `secrets`: what no message may repeat (the key)."""
    import httpx2
    import openai

    secrets = tuple(secrets)

    def said(text: str, limit: int = TEXT_LIMIT) -> str:
        return shorten(redact(text, secrets), limit)

    if isinstance(exc, BackendError | ContextOverflow):
        return exc
    if isinstance(exc, NotAStream):
        return _not_a_stream(exc, base, said)
    if isinstance(exc, Deadline):
        return BackendError("server_timeout", base=base)
    undecodable = isinstance(exc, httpx2.DecodingError) or isinstance(exc.__cause__, httpx2.DecodingError)
    if during_reply and (isinstance(exc, ValueError) or undecodable):
        # an event that is not JSON (openai's decoder gave up), an odd-shaped one, or a body that is
        # not what its Content-Encoding says
        wrong = exc.__cause__ if undecodable and exc.__cause__ is not None else exc
        reason = str(wrong) if isinstance(wrong, Malformed) else f"{type(wrong).__name__}: {wrong}"
        return BackendError("malformed_stream", base=base, reason=said(reason, 200))
    if isinstance(exc, openai.APITimeoutError):
        return BackendError("server_timeout", base=base)
    if isinstance(exc, openai.APIConnectionError):
        return BackendError("server_cut" if during_reply else "unreachable", base=base, reason=said(cause(exc), 200))
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return BackendError("unauthorized", base=base)
    if isinstance(exc, openai.RateLimitError):
        seconds = retry_after(exc.response.headers.get("retry-after", "") if exc.response is not None else "")
        if seconds is None:
            return BackendError("rate_limited_soon", base=base)
        return BackendError("rate_limited", base=base, seconds=seconds)
    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    if status is not None and 300 <= status < 400:  # a redirect: followed neither for the status nor for replies
        return BackendError("redirected", base=base, status=status, location=said(_location(exc, base), 200))
    text = message(exc)
    lowered = text.lower()
    if isinstance(exc, openai.NotFoundError) or "pinned to" in lowered or "model not found" in lowered:
        return BackendError("unknown_model", model=model, available=available)
    if overflow := context_overflow(lowered):
        return overflow
    if status in _REFUSALS and NO_VISION.search(lowered):
        return BackendError("no_vision", model=model)
    if status is not None:
        key = "server_error" if status >= 500 else "server_refused"
        return BackendError(key, base=base, status=status, reason=said(text))
    if isinstance(exc, openai.APIError):  # an error event inside the stream: the server's own words
        return BackendError("server_said", base=base, reason=said(text))
    if during_reply:
        return BackendError("server_cut", base=base, reason=said(f"{type(exc).__name__}: {exc}", 200))
    return BackendError("unreachable", base=base, reason=said(f"{type(exc).__name__}: {exc}"))


def _not_a_stream(exc: NotAStream, base: str, said: Any) -> BackendError:
    """A 200 that is not an event stream, said for what it is: the server's error if it is a JSON
    error, a whole reply at once if it is one, else what came (a page's title, never its markup)."""
    kind = said(exc.content_type, NAME_LIMIT)
    try:
        data = json.loads(exc.body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error")
        text = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(text, str) and text.strip():
            return BackendError("server_said", base=base, reason=said(first_line(text, TEXT_LIMIT)))
        if "choices" in data:
            return BackendError("not_streamed", base=base, kind=kind)
        return BackendError("not_a_stream", base=base, status=exc.status, kind=kind,
                            first_line=said("JSON: " + ", ".join(str(k) for k in list(data)[:5]), 120))  # fmt: skip
    if data is None and exc.body.lstrip()[:1] in ("{", "["):  # JSON cut short (at most 64 KB is read)
        if found := _JSON_MESSAGE.search(exc.body):
            reason = said(first_line(_unquoted(found.group(1)), TEXT_LIMIT))
            return BackendError("server_said", base=base, reason=reason)
        if '"choices"' in exc.body:
            return BackendError("not_streamed", base=base, kind=kind)
        return BackendError("not_a_stream", base=base, status=exc.status, kind=kind, first_line="JSON")
    return BackendError("not_a_stream", base=base, status=exc.status, kind=kind, first_line=said(first_line(exc.body)))


def _location(exc: Any, base: str) -> str:
    """Where a redirect points, as an address to show (resolved, without credentials): the API root
    there, when the redirect keeps the request's own path (`…/v1/models` → `https://…/v1`)."""
    response = getattr(exc, "response", None)
    where = response.headers.get("location", "") if response is not None else ""
    with contextlib.suppress(Exception):  # a Location that is not an address: shown as it came
        asked = response.request.url
        where = str(asked.join(where)) if where else ""
        endpoint = asked.path.removeprefix(urlsplit(base).path.rstrip("/"))  # "/models", "/chat/completions"
        parts = urlsplit(where)
        if endpoint.strip("/") and parts.path.endswith(endpoint):
            where = urlunsplit(parts._replace(path=parts.path.removesuffix(endpoint), query=""))
    return public(where) or "?"


def retry_after(header: str, now: float | None = None) -> int | None:
    """Seconds to wait, from a `Retry-After` in seconds (rounded up) or as an HTTP date, at most an
    hour; None when it says neither, or a time already past."""
    header = header.strip()
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(RETRY_LIMIT, math.ceil(seconds))


_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)


def first_line(body: str, limit: int = 120) -> str:
    """What a person can read of a body: an HTML page's title or first line of text (never its
    markup, scripts or styles), at most `limit` characters."""
    if "<" in body and ">" in body:
        title = re.search(r"<title[^>]*>(.*?)</title>", body, re.I | re.S)
        body = title.group(1) if title else re.sub(r"<[^>]*>", " ", _HIDDEN.sub(" ", body))
        body = html.unescape(body)
    line = next((part.strip() for part in body.splitlines() if part.strip()), "")
    return shorten(" ".join(line.split()), limit) or "(empty)"


def message(exc: BaseException) -> str:
    """The server's words, once: a JSON error's message (else the body), as text. Never the JSON
    itself, nor the client's "Error code: 500 -" before it (the message says the status)."""
    said = _ERROR_CODE.sub("", str(getattr(exc, "message", "") or exc), count=1)
    body: Any = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
        text = text if isinstance(text, str) else json.dumps(body, ensure_ascii=False)
    else:
        text = str(body or "")
        if text.lstrip()[:1] in ("{", "["):  # JSON cut short (a body is read 64 KB far): its message, if any
            found = _JSON_MESSAGE.search(text)
            text = _unquoted(found.group(1)) if found else ""
            said = "" if said.lstrip()[:1] in ("{", "[") else said
    if text and text in said:
        text = ""
    return first_line(f"{said} {text}".strip(), TEXT_LIMIT) if "<" in said + text else f"{said} {text}".strip()


_ERROR_CODE = re.compile(r"^Error code: \d+(?: - )?")
_JSON_MESSAGE = re.compile(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)')


def _unquoted(text: str) -> str:
    try:
        return json.loads(f'"{text}"')
    except ValueError:  # cut inside an escape
        return text


def cause(exc: BaseException) -> str:
    underneath = exc.__cause__ or exc.__context__
    return f"{type(underneath).__name__}: {underneath}"[:200] if underneath else str(exc)[:200]


def request_info(cause: BaseException | None) -> str:
    """What a failure carries for the log: its HTTP status and request id, if any."""
    response = getattr(cause, "response", None)
    parts = [f"status {response.status_code}"] if response is not None else []
    request_id = getattr(cause, "request_id", None) or (response.headers.get("x-request-id") if response else None)
    if request_id:
        parts.append(f"request {shorten(str(request_id))}")
    return (", " + ", ".join(parts)) if parts else ""


_NUMBERS = [  # the context's size first, then what was asked for
    re.compile(
        r"maximum context length is (\d+) tokens.*?(?:requested|resulted in|contains(?: at least)?) (\d+)", re.S
    ),
    re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)", re.S),  # llama.cpp
]


def context_overflow(lowered: str) -> ContextOverflow | None:
    """A server's "too long for the context" (its message, lower-cased) as the same message the
    in-process model gives."""
    phrases = ("context length", "context_length_exceeded", "exceed_context_size", "exceeds the available context",
               "context size", "context window", "too many tokens", "maximum context")  # fmt: skip
    if not any(p in lowered for p in phrases):
        return None
    if match := _NUMBERS[0].search(lowered):  # vLLM, llama-cpp-python, OpenAI
        return ContextOverflow(int(match.group(2)), int(match.group(1)))
    if match := _NUMBERS[1].search(lowered):  # llama.cpp's server
        return ContextOverflow(int(match.group(1)), int(match.group(2)))
    return ContextOverflow(None, None)
