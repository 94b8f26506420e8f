"""What the two in-process backends share (transformers in `gemma`, llama.cpp in `gguf`); torch-free.

- `FifoGate`: one reply at a time, in arrival order, and how many are ahead of each waiter.
- `Pipe` and `relay`: text and phases from the model thread to the reader's thread, the first chunk
  timed, and the model told to stop when the reader goes away.
- `InProcessBackend`: the shell around an engine. The model loads once per process, on the model
  thread (`core.model.backends.model_thread`), the first time a reply or `prepare()` needs it; whoever
  arrives meanwhile waits for that load and sees its phases; a failure is remembered for the status.
  `warm()` encodes a new character's prefix in the background while the model is free. A subclass says
  how to load (`loader`), what an engine is (`factory`) and how its status reads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from core.base.i18n import Text
from core.base.settings import Settings
from core.model.backend import (
    BackendError,
    BackendStatus,
    Cancelled,
    GenerationStats,
    OnProgress,
    Progress,
    ReplyRequest,
    ReplyStream,
    Reporter,
)
from core.model.backends import model_thread
from core.model.prompts import CharacterPrompt

log = logging.getLogger(__name__)


class Pipe:
    """Text and phases from the model thread to the reader, and a tick (None) when nothing comes."""

    _DONE = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def put(self, item: str | Text) -> None:
        self._queue.put(item)

    def end(self) -> None:
        self._queue.put(self._DONE)

    def items(self, tick: float) -> Iterator[str | Text | None]:
        """Text chunks and phases as they come, and None whenever `tick` seconds pass without either."""
        while True:
            try:
                item = self._queue.get(timeout=tick)
            except queue.Empty:
                yield None
                continue
            if item is self._DONE:
                return
            yield item


def relay(
    items: Iterator[str | Text | None], stats: GenerationStats, report: Reporter, started: float, stop: threading.Event
) -> Iterator[str]:
    """The reader's side of a reply: each text chunk yielded (the first one's time kept in `stats`, so a
    reply saved mid-way carries it), each phase or tick of the clock reported. If the reader goes away
    before the end (Stop, a rerun, a closed tab), `stop` is set, so the model is free at once."""
    drained = False
    try:
        for item in items:
            if isinstance(item, str):
                if item:
                    if not stats.ttft_s:
                        stats.ttft_s = time.perf_counter() - started
                    report.current = Text("progress.writing", {"tokens": stats.new_tokens})
                    yield item
            else:
                report(item)
        drained = True
    finally:
        if not drained:
            stop.set()


def size_text(n: int) -> str:
    """A model's size as people read it: GB, MB, or kB for a tiny test model (never "0 MB")."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GB"
    return f"{n / 2**20:,.0f} MB" if n >= 2**20 else f"{max(n, 1) / 2**10:,.0f} kB"


class FifoGate:
    """One request at a time, in arrival order; waiters can see how many are ahead of them."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._next = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    @property
    def waiting(self) -> int:
        with self._cv:
            return max(0, self._next - self._serving - len(self._abandoned) - 1)

    @property
    def idle(self) -> bool:
        """Nobody is being served or waiting."""
        with self._cv:
            return self._next - self._serving - len(self._abandoned) <= 0

    @contextmanager
    def turn(
        self, on_wait: Callable[[int], None] | None = None, cancel: threading.Event | None = None
    ) -> Iterator[None]:
        with self._cv:
            ticket = self._next
            self._next += 1
        served = False
        try:
            while True:
                with self._cv:
                    if self._serving == ticket:
                        served = True
                        break
                    ahead = ticket - self._serving - sum(1 for a in self._abandoned if a < ticket)
                if on_wait:  # every pass (about 5 a second), so a waiter's clock can tick
                    on_wait(ahead)
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                with self._cv:
                    self._cv.wait(0.2)
            yield
        finally:
            with self._cv:
                if served or self._serving == ticket:
                    self._advance()
                else:
                    self._abandoned.add(ticket)

    def _advance(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cv.notify_all()


class InProcessBackend:
    """The one model of this process, behind the `Backend` protocol. `loader(settings, note)` loads it
    on the model thread and returns a handle (`note` takes the phases); `factory(handle)` makes the
    engine, which streams replies (`stream`), counts a request's tokens (`request_tokens`), warms a
    prefix (`warm`) and holds the handle (`handle.context_limit`)."""

    load_error: ClassVar[type[BackendError]] = BackendError  # what an unexpected failure is reported as

    def __init__(self, settings: Settings, factory: Callable[[Any], Any], loader: Callable[..., Any]) -> None:
        self.settings = settings
        self._factory = factory
        self._loader = loader
        self._lock = threading.Lock()
        self._engine: Any = None
        self._state = "idle"
        self._phase: Text | None = None
        self._error: BackendError | None = None
        self._warm_lock = threading.Condition()
        self._to_warm: dict[str, CharacterPrompt] = {}  # by tag: a newer prefix replaces a pending one
        self._warmer: threading.Thread | None = None

    # -- what a subclass says ---------------------------------------------------------------------
    @property
    def source(self) -> str:
        """The model as the settings name it (errors say it)."""
        return self.settings.model_id

    def idle_description(self) -> str:
        """The model and its engine before it is loaded ("google/gemma-3-4b-it (transformers)")."""
        return self.source

    def ready_status(self, engine: Any) -> BackendStatus:
        return BackendStatus("ready", self.idle_description())

    def flush(self, engine: Any) -> None:
        """Wait for whatever the engine still writes in the background (saved prefixes)."""

    # -- the Backend protocol ---------------------------------------------------------------------
    @property
    def prepared(self) -> bool:
        return self._engine is not None

    def status(self) -> BackendStatus:
        engine = self._engine
        if engine is None:
            return BackendStatus(self._state, self.idle_description(), phase=self._phase, error=self._error)  # type: ignore[arg-type]
        return self.ready_status(engine)

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

    def warm(self, tag: str, prefix: Callable[[], CharacterPrompt]) -> None:
        """Encode a new or changed character's prefix in the background, if the model is loaded (a
        warm-up never loads it), so its first reply does not wait for the vision tower. Replies go
        first: a warm-up runs only while the model is free and gives way between pictures. `prefix`
        is asked for only then (it reads every sheet); a newer one for a `tag` replaces a pending one."""
        if self._engine is None:
            return
        character = prefix()
        with self._warm_lock:
            self._to_warm[tag or character.key] = character
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
        if self._engine is not None:
            self.flush(self._engine)
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

    # -- loading ----------------------------------------------------------------------------------
    def engine(self, progress: Progress | None = None) -> Any:
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
            except BackendError as exc:
                self._state, self._error = "failed", exc
                raise
            except Exception as exc:
                error = self.load_error("unknown", source=self.source, reason=f"{type(exc).__name__}: {exc}")
                self._state, self._error = "failed", error
                raise error from exc
            finally:
                self._phase = None
            self._state = "ready"
            return self._engine
        finally:
            self._lock.release()

    def _load(self, relay: Reporter) -> Any:
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
