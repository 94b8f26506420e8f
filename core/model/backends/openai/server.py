"""Whether the server is there and serves the model: a cheap `GET /models`, never a generation.

A page never waits on a slow or unreachable server: the last answer is given at once and, once it
is old, asked again in the background (one check at a time). Only the very first call asks and waits,
and no check takes longer than `CHECK_DEADLINE` in all, however the server trickles its answer. A
failure is logged once, when it begins (or changes), not at every look.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from core.base.settings import Settings
from core.model.backend import BackendError, BackendStatus
from core.model.backends.openai.errors import NAME_LIMIT, public, request_info, shorten
from core.model.backends.openai.reader import within

log = logging.getLogger("refsheet.remote")
CHECK_SECONDS = 30.0  # how long a good answer is trusted
RECHECK_FAILED_SECONDS = 5.0  # and a bad one
CHECK_TIMEOUT = 5.0  # the longest wait for any one read
CHECK_DEADLINE = 10.0  # and for the whole answer
MODELS_LIMIT = 16 * 1024 * 1024  # what is read of a list of models (a hosted service lists hundreds)


class ServerCheck:
    """The server's models (and the context it reports), and the status a page shows."""

    def __init__(
        self,
        settings: Settings,
        client: Callable[..., Any],
        translate: Callable[[Exception], Exception],
        known_failure: Callable[[], BackendError | None],
    ) -> None:
        """`client(trace, read_timeout, answer_limit)`: an `openai.OpenAI` for one request.
        `known_failure`: what a reply already found wrong that `/models` cannot show (a model that
        does not see pictures); reported instead of "ready" while it holds."""
        self.settings = settings
        self._client, self._translate, self._known_failure = client, translate, known_failure
        self._lock = threading.Lock()
        self._checked: tuple[float, BackendStatus] | None = None
        self._refreshing = False  # a background check is under way
        self.models: list[str] = []
        self.max_model_len: int | None = None  # what the server says the model holds, if it says

    @property
    def where(self) -> str:
        return f"{public(self.settings.api_base)} · {self.settings.api_model}"

    def status(self) -> BackendStatus:
        with self._lock:
            checked = self._checked
            if checked is not None:
                at, status = checked
                fresh = CHECK_SECONDS if status.state == "ready" else RECHECK_FAILED_SECONDS
                if time.monotonic() - at >= fresh and not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._refresh, name="refsheet-server-check", daemon=True).start()
                return status
        return self.check()

    def check(self, tick: Callable[[], None] | None = None) -> BackendStatus:
        """Ask now (`tick`: called twice a second meanwhile), and keep the answer for pages."""
        cause: BaseException | None = None
        try:
            self.models, self.max_model_len = self._list_models(tick)
            if self.settings.api_model not in self.models:
                raise BackendError("unknown_model", model=self.settings.api_model, available=self.available())
            if (failure := self._known_failure()) is not None:
                raise failure
            status = BackendStatus("ready", self.where, remote=True)
        except BackendError as exc:
            status, cause = BackendStatus("failed", self.where, error=exc, remote=True), exc.__cause__
        except Exception as exc:  # noqa: BLE001 - every client failure becomes an instruction
            status, cause = BackendStatus("failed", self.where, error=self._translate(exc), remote=True), exc
        self.record(status, cause)
        return status

    def record(self, status: BackendStatus, cause: BaseException | None = None) -> None:
        """What pages show from now on (a failure found by a reply, say). A failure that begins here
        is logged, once (with the server, the error, the HTTP status and request id)."""
        with self._lock:
            before = self._checked[1] if self._checked is not None else None
            self._checked = (time.monotonic(), status)
        code = getattr(status.error, "code", None)
        if status.state == "failed" and (before is None or getattr(before.error, "code", None) != code):
            log.warning("model server %s cannot serve: %s%s", public(self.settings.api_base),
                        code or type(status.error).__name__, request_info(cause))  # fmt: skip

    def available(self) -> str:
        """The models the server has, for a message (the first twelve, each name at most 80 characters)."""
        shown = ", ".join(shorten(m, NAME_LIMIT) for m in self.models[:12]) + (" …" if len(self.models) > 12 else "")
        return shown or "—"

    def _refresh(self) -> None:
        try:
            self.check()
        finally:
            with self._lock:
                self._refreshing = False

    def _list_models(self, tick: Callable[[], None] | None) -> tuple[list[str], int | None]:
        if not self.settings.api_base or not self.settings.api_model:
            raise BackendError("api_settings")
        import openai

        base = public(self.settings.api_base)
        try:
            listed = within(lambda trace: self._client(trace, CHECK_TIMEOUT, MODELS_LIMIT).models.list(),
                            CHECK_DEADLINE, tick)  # fmt: skip
        except openai.NotFoundError as exc:  # nothing OpenAI-shaped at this address (often: no /v1)
            suggestion = base if base.rstrip("/").endswith("/v1") else base.rstrip("/") + "/v1"
            raise BackendError("no_api_here", base=base, status=exc.status_code, suggestion=suggestion) from exc
        except (ValueError, openai.APIResponseValidationError) as exc:  # not JSON, or not a list of models
            raise BackendError("bad_models_list", base=base, detail=f"{type(exc).__name__}"[:80]) from exc
        data = getattr(listed, "data", None)
        if not isinstance(data, list) or not all(isinstance(getattr(m, "id", None), str) for m in data):
            raise BackendError("bad_models_list", base=base, detail="no list of models")
        ids, lengths = [], {}
        for entry in data:
            ids.append(entry.id)
            extra = entry.model_extra or {}
            meta = extra.get("meta") if isinstance(extra.get("meta"), dict) else {}
            for length in (extra.get("max_model_len"), meta.get("n_ctx")):  # vLLM's, llama.cpp's
                if isinstance(length, int) and length > 0:
                    lengths[entry.id] = length
        return ids, lengths.get(self.settings.api_model)
