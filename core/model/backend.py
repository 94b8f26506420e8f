"""The seam between the app and whatever writes the replies.

Backend-neutral: a `ReplyRequest` goes in, a `ReplyStream` of text chunks comes out with its
`GenerationStats`; failures are `UserError`s that say what to do. `Backend` is the small protocol
every model source implements (`core.model.backends.*`); `core.model.registry` picks the configured
one. This module imports no implementation, and nothing here imports torch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from core.base.errors import UserError
from core.base.i18n import Text
from core.base.sampling import SamplerSettings
from core.model.prompts import CharacterPrompt, Turn

Progress = Callable[[Text], None]  # what a backend is busy with while it loads or connects
OnProgress = Callable[[Text], None]  # what a reply waits for; params include "elapsed" (whole seconds)


class BackendError(UserError):
    """The model source cannot serve (not loadable, unreachable…): an instruction for the operator."""

    namespace = "model.error"


class ContextOverflow(UserError):
    """Even with every older turn dropped the prompt does not fit. `character`: the character prefix
    alone is too long (its fields and sheets must shrink), not the user's last message."""

    namespace = "chat.error"

    def __init__(self, needed: int | None, budget: int | None, character: bool = False) -> None:
        self.needed, self.budget, self.character = needed, budget, character
        if needed is None or budget is None:  # a server said so without the numbers
            super().__init__("too_long_server")
        else:
            super().__init__("character_too_long" if character else "too_long", needed=needed, budget=budget)


class Cancelled(Exception):
    """The request was stopped while it waited in the queue."""


@dataclass(frozen=True)
class ReplyRequest:
    prefix: CharacterPrompt
    history: tuple[Turn, ...]  # ends with the user turn to answer (empty: the greeting)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    conversation_key: str | None = None  # lets a backend keep per-conversation state (a KV cache)
    continuation: str = ""  # the reply so far, to carry on from its last word (Continue after a cut-off)


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prefilled_tokens: int = 0  # prompt tokens actually computed (the rest came from a cache)
    new_tokens: int = 0
    queued_s: float = 0.0
    ttft_s: float = 0.0  # request start (after the queue) to the first new token
    total_s: float = 0.0
    tokens_per_s: float = 0.0  # decoding speed after the first token
    dropped_turns: int = 0
    stopped: bool = False  # by the person (Stop, a closed page), not by the model or the server
    cache: str = "cold"  # "conversation" | "prefix" | "server" (the server's own prefix cache) | "cold"
    # How the reply ended: "stop" (the model ended it: the only complete reply), "length" (it reached
    # the longest reply asked for), "user" (Stop), or "" (it did not say, or it failed).
    finish: str = ""
    estimated: bool = False  # the prompt counts are the app's estimate: the server sent none

    @property
    def complete(self) -> bool:
        return self.finish == "stop" and not self.stopped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Reporter:
    """Progress for whoever waits for a reply: each phase with the seconds since the request arrived.

    A new phase is passed on at once; the same phase again at most once a second (so a clock can
    tick and a claim on the reply row can be renewed while nothing else happens)."""

    def __init__(self, on_progress: OnProgress | None, since: float) -> None:
        self._on, self._since = on_progress, since
        self.current: Text | None = None
        self._sent: tuple[Any, float] = (None, 0.0)

    def __call__(self, phase: Text | None = None) -> None:
        if phase is not None:
            self.current = phase
        if self._on is None or self.current is None:
            return
        now = time.perf_counter()
        shown, at = self._sent
        if shown != self.current or now - at >= 1.0:
            self._sent = (self.current, now)
            self._on(Text(self.current.key, {**self.current.params, "elapsed": int(now - self._since)}))


class ReplyStream:
    """Iterate for text chunks; `stats` is complete once iteration ends."""

    def __init__(self, chunks: Iterator[str], stats: GenerationStats) -> None:
        self._chunks, self.stats = chunks, stats

    def __iter__(self) -> Iterator[str]:
        return self._chunks

    def close(self) -> None:
        self._chunks.close()  # type: ignore[attr-defined]


def collect(stream: ReplyStream) -> str:
    """Run a reply to the end and return its text (tests, the benchmark, greetings off-page)."""
    return "".join(stream)


@dataclass(frozen=True)
class BackendStatus:
    """What a page shows about the model source, without loading or generating anything."""

    state: Literal["idle", "loading", "ready", "failed"]
    description: str  # e.g. "gemma-3-4b-it · 4bit · cuda · 3.1 GB", or "http://gpu-box:8000/v1 · gemma-3-27b-it"
    remote: bool = False  # a server ("Connected to …"), not a model in this process ("Model ready: …")
    phase: Text | None = None  # while loading
    error: UserError | None = None  # when failed: what to do
    notice: Text | None = None  # ready, with a caveat worth knowing (e.g. quantization fell back)
    details: tuple[Text, ...] = ()  # e.g. how the KV cache is being used


class Replier(Protocol):
    """Anything that streams a reply for a request (a backend, or the engine inside one)."""

    def stream(
        self, request: ReplyRequest, stop: threading.Event | None = None, on_progress: OnProgress | None = None
    ) -> ReplyStream:
        """Nothing runs until iteration begins; `on_progress` is called on the iterating thread, at each
        new phase and at least once a second until the reply ends."""
        ...


class Backend(Replier, Protocol):
    """A model source (`core.model.registry` names them): what the app asks of one, and no more."""

    @property
    def prepared(self) -> bool:
        """Ready for replies without another `prepare` (the model loaded; the server asked what it can)."""
        ...

    def status(self) -> BackendStatus:
        """Cheap and side-effect free: never loads a model or generates."""
        ...

    def prepare(self, progress: Progress | None = None) -> None:
        """Load or connect now (reporting phases); raises `BackendError` with an instruction."""
        ...

    def count_tokens(self, request: ReplyRequest) -> int:
        """Tokens of the prompt the request makes, before any trimming (needs `prepare` first)."""
        ...

    def context_limit(self) -> int | None:
        """Tokens the model can hold (prompt and reply); None until known."""
        ...

    def warm(self, tag: str, prefix: Callable[[], CharacterPrompt]) -> None:
        """Get ready for a new or changed character (`tag` names it) in the background, if that helps
        and costs no reply any time; `prefix` builds it (reading every sheet) and is called only then."""
        ...
