"""The in-process Gemma 3 backend: one model per process, loaded on first use, shared by every session.

It owns what is specific to running the model here (loading on the model thread, the KV store,
the queue) behind the neutral `core.backend.Backend` protocol. Pages read `status()` freely; only
`prepare()` or a reply loads the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.backend import BackendStatus, OnProgress, Progress, ReplyRequest, ReplyStream
from core.gemma import model_thread
from core.gemma.engine import ChatEngine
from core.gemma.kvcache import MB, KVStore, default_limit_mb
from core.gemma.model import ModelHandle, ModelLoadError, load_model
from core.i18n import Text
from core.settings import Settings


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"


def describe(handle: ModelHandle) -> str:
    """One line a person can read: "gemma-3-4b-it · 4bit · cuda · bfloat16 · 3.1 GB"."""
    name = Path(handle.source).name or handle.source
    dtype = str(handle.dtype).removeprefix("torch.")
    return f"{name} · {handle.quantization} · {handle.device} · {dtype} · {size_text(handle.footprint_bytes)}"


class GemmaBackend:
    """The one model of this process. `engine_factory` turns the loaded handle into a `ChatEngine`
    (by default with a KV store sized by the settings); `loader` is `load_model` unless a test says."""

    sees_images = True

    def __init__(
        self,
        settings: Settings,
        engine_factory: Callable[[ModelHandle], ChatEngine] | None = None,
        loader: Callable[..., ModelHandle] = load_model,
    ) -> None:
        self.settings = settings
        self._factory = engine_factory or self._engine_with_cache
        self._loader = loader
        self._lock = threading.Lock()
        self._engine: ChatEngine | None = None
        self._state = "idle"
        self._phase: Text | None = None
        self._error: ModelLoadError | None = None

    def _engine_with_cache(self, handle: ModelHandle) -> ChatEngine:
        limit_mb = self.settings.kv_cache_mb or default_limit_mb(handle.device)
        return ChatEngine(handle, KVStore(limit_mb * MB))

    # -- the Backend protocol ---------------------------------------------------------------------
    @property
    def prepared(self) -> bool:
        return self._engine is not None

    def status(self) -> BackendStatus:
        engine = self._engine
        if engine is None:
            return BackendStatus(self._state, self.settings.model_id, phase=self._phase, error=self._error)  # type: ignore[arg-type]
        report = engine.cache_report()
        details = (Text("model.cache", report),) if report else ()
        return BackendStatus("ready", describe(engine.handle), notice=engine.handle.notice, details=details)

    def prepare(self, progress: Progress | None = None) -> None:
        self.engine(progress)

    def stream(
        self, request: ReplyRequest, stop: threading.Event | None = None, on_progress: OnProgress | None = None
    ) -> ReplyStream:
        return self.engine().stream(request, stop, on_progress)

    def count_tokens(self, request: ReplyRequest) -> int:
        return self.engine().request_tokens(request)

    def context_limit(self) -> int | None:
        return self._engine.handle.context_limit if self._engine is not None else None

    # -- loading ----------------------------------------------------------------------------------
    def engine(self, progress: Progress | None = None) -> ChatEngine:
        """The engine, loading the model first if needed (others arriving meanwhile wait for it)."""
        if self._engine is not None:
            return self._engine
        with self._lock:
            if self._engine is not None:
                return self._engine
            self._state, self._error = "loading", None
            try:
                self._engine = self._factory(self._load(progress))
            except ModelLoadError as exc:
                self._state, self._error = "failed", exc
                raise
            except Exception as exc:
                error = ModelLoadError("unknown", source=self.settings.model_id, reason=f"{type(exc).__name__}: {exc}")
                self._state, self._error = "failed", error
                raise error from exc
            finally:
                self._phase = None
            self._state = "ready"
            return self._engine

    def _load(self, progress: Progress | None) -> ModelHandle:
        """Load on the model thread; relay its progress to the caller's thread (where the UI is)."""

        def note(phase: Text) -> None:
            self._phase = phase

        future = model_thread.submit(self._loader, self.settings, note)
        started = time.monotonic()
        shown: tuple[Any, float] = (None, 0.0)
        while True:
            try:
                handle = future.result(timeout=0.2)
            except TimeoutError:
                handle = None
            now = time.monotonic()
            if progress and self._phase and (self._phase != shown[0] or now - shown[1] >= 1.0):
                shown = (self._phase, now)  # a new phase at once, the same one each second (its clock)
                progress(Text(self._phase.key, {**self._phase.params, "elapsed": int(now - started)}))
            if handle is not None:
                return handle
