"""The in-process Gemma 3 backend: one model per process, loaded on first use, shared by every session.

It owns what is specific to running the model here (loading on the model thread, the KV store,
the queue) behind the neutral `core.model.backend.Backend` protocol. Pages read `status()` freely; only
`prepare()` or a reply loads the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.base.i18n import Text
from core.base.settings import Settings
from core.model.backend import BackendStatus, OnProgress, Progress, ReplyRequest, ReplyStream, Reporter
from core.model.backends.gemma import model_thread
from core.model.backends.gemma.engine import ChatEngine, new_cache
from core.model.backends.gemma.kvcache import MB, KVStore, default_limit_mb
from core.model.backends.gemma.model import ModelHandle, ModelLoadError, load_model
from core.model.backends.gemma.prefix_disk import PrefixDisk
from core.model.prompts import CharacterPrompt

log = logging.getLogger(__name__)


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
        self._warm_lock = threading.Condition()
        self._to_warm: dict[str, CharacterPrompt] = {}  # by tag: a newer prefix replaces a pending one
        self._warmer: threading.Thread | None = None

    def _engine_with_cache(self, handle: ModelHandle) -> ChatEngine:
        limit_mb = self.settings.kv_cache_mb or default_limit_mb(handle.device)
        disk = None
        if self.settings.prefix_cache_mb > 0:  # character prefixes outlive the process
            folder = self.settings.data_dir / "prefix-cache"
            disk = PrefixDisk(folder, self.settings.prefix_cache_mb * MB, handle.identity, lambda: new_cache(handle))
        return ChatEngine(handle, KVStore(limit_mb * MB, disk, str(handle.model.device)))

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

    warms = True  # a loaded model reads new and changed characters in the background

    def warm(self, prefix: CharacterPrompt, tag: str = "") -> None:
        """Encode a new or changed character's prefix in the background, if the model is loaded (a
        warm-up never loads it), so its first reply does not wait for the vision tower. Replies go
        first: a warm-up runs only while the model is free and gives way between pictures."""
        if self._engine is None:
            return
        with self._warm_lock:
            self._to_warm[tag or prefix.key] = prefix
            if self._warmer is None or not self._warmer.is_alive():
                self._warmer = threading.Thread(target=self._warm_all, name="refsheet-warm-up", daemon=True)
                self._warmer.start()

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until no warm-up is pending or running (and saved prefixes are on disk); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._warm_lock:
            while self._to_warm or (self._warmer is not None and self._warmer.is_alive()):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._warm_lock.wait(0.1 if left is None else min(0.1, left))
        if self._engine is not None and self._engine.kv is not None:
            self._engine.kv.flush()
        return True

    def _warm_all(self) -> None:
        """The warm-up thread: each pending prefix in turn, retried while replies keep the model busy."""
        while True:
            with self._warm_lock:
                if not self._to_warm:
                    self._warmer = None
                    self._warm_lock.notify_all()
                    return
                tag = next(iter(self._to_warm))
                prefix = self._to_warm[tag]
            engine = self._engine
            try:
                done = engine is None or engine.warm(prefix)
            except Exception:  # a warm-up is a favour: its failure only means a cold start
                log.exception("warming up a character prefix failed")
                done = True
            with self._warm_lock:
                if done and self._to_warm.get(tag) is prefix:
                    del self._to_warm[tag]
                if not done:
                    self._warm_lock.wait(0.5)  # the model is busy: try again shortly

    def context_limit(self) -> int | None:
        return self._engine.handle.context_limit if self._engine is not None else None

    # -- loading ----------------------------------------------------------------------------------
    def engine(self, progress: Progress | None = None) -> ChatEngine:
        """The engine, loading the model first if needed. Whoever arrives while another session (or the
        preload) is loading it waits for that load, seeing the same phases."""
        if self._engine is not None:
            return self._engine
        relay = Reporter(progress, time.perf_counter())  # phases with the clock of this caller's wait
        while not self._lock.acquire(timeout=0.2):
            relay(self._phase)
        try:
            if self._engine is not None:
                return self._engine
            self._state, self._error = "loading", None
            try:
                self._engine = self._factory(self._load(relay))
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
        finally:
            self._lock.release()

    def _load(self, relay: Reporter) -> ModelHandle:
        """Load on the model thread; relay its progress to the caller's thread (where the UI is)."""

        def note(phase: Text) -> None:
            self._phase = phase

        future = model_thread.submit(self._loader, self.settings, note)
        while True:
            try:
                handle = future.result(timeout=0.2)
            except TimeoutError:
                handle = None
            relay(self._phase)
            if handle is not None:
                return handle
