"""Streaming in-character replies from a Gemma 3 GGUF, one request at a time.

The path of one reply: `ReplyRequest` → fit the history to the context (`core.model.context.fit`,
counting with the model's own tokenizer) → positions and keys (`prompt`) → the best starting point →
evaluate only what the cache lacks (`session`) → sample token by token on the model thread, streamed
to the caller's thread.

The best starting point, since llama.cpp's context holds one sequence: what it holds now (the last
reply's conversation, or another conversation of the same character: their common prefix is kept),
this conversation's own snapshot (set aside when another conversation took the context), or the
character prefix's snapshot (instruction + sheets, already encoded; from memory, or from disk after a
restart), whichever shares the most positions with the prompt. A character prefix evaluated for the
first time is snapshotted on the way (and written to disk), so its next conversation skips it.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core.base.i18n import Text
from core.base.sheets import Picture
from core.model.backend import Cancelled, GenerationStats, OnProgress, ReplyRequest, ReplyStream, Reporter
from core.model.backends import model_thread
from core.model.backends.gguf.model import GGUFHandle
from core.model.backends.gguf.prompt import Encoder, Prompt
from core.model.backends.gguf.session import Session
from core.model.backends.gguf.states import State, StateDisk, States
from core.model.backends.inprocess import FifoGate, Pipe, relay
from core.model.context import fit
from core.model.prompts import CharacterPrompt, build_messages, prefix_message

MB = 2**20
PREFIX = "prefix:"


@dataclass(frozen=True)
class Start:
    """Where a reply starts: `state` to restore first (None: the cache as it is), then keep `cached`
    positions; `source` says where they came from."""

    cached: int
    source: str  # "conversation" | "prefix" | "saved" (a prefix read from disk) | "cold"
    state: State | None = None


class GGUFEngine:
    """Serves replies from one loaded GGUF; every request passes one FIFO gate."""

    def __init__(self, handle: GGUFHandle, states: States, disk: StateDisk | None = None) -> None:
        self.handle = handle
        self.gate = FifoGate()
        self.encoder = Encoder(handle.llm, handle.image_tokens)
        self.session = Session(handle)
        self.states, self.disk = states, disk
        self.owner: str | None = None  # the conversation whose positions the cache holds
        self.hits = self.prefix_hits = self.misses = 0

    # -- counting ---------------------------------------------------------------------------------
    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return self.encoder.count(messages)

    def request_tokens(self, request: ReplyRequest) -> int:
        """Positions of the whole prompt a request makes, before any trimming."""
        return self.count_tokens(build_messages(request.prefix, request.history)[0])

    def fit(self, request: ReplyRequest) -> tuple[list[dict[str, Any]], list[Picture], int]:
        return fit(request, self.count_tokens, self.handle.context_limit)

    def prefix_prompt(self, prefix: CharacterPrompt) -> Prompt:
        return self.encoder.prompt([prefix_message(prefix)], prefix.sheets)

    def cache_report(self) -> dict[str, Any]:
        report = self.states.report()
        return {
            "entries": report["entries"],
            "hits": self.hits,
            "prefix_hits": self.prefix_hits,
            "disk_loads": self.disk.loads if self.disk is not None else 0,
            "misses": self.misses,
            "megabytes": f"{report['bytes'] / MB:.1f}",
            "limit_mb": self.states.limit_bytes // MB,
        }

    # -- where a reply starts ---------------------------------------------------------------------
    def _prefix_end(self, prompt: Prompt, prefix: CharacterPrompt) -> int:
        """How much of `prompt` is the character prefix, to be kept as its snapshot: the prefix message
        but its last token (usually all of it, the reply's turn following; a first message of the user's
        joins the prefix's turn, and then up to where they differ), never inside a picture."""
        own = self.prefix_prompt(prefix)
        n = 0
        for a, b in zip(prompt.keys, own.keys[:-1], strict=False):
            if a != b:
                break
            n += 1
        return prompt.safe_cut(min(n, len(prompt) - 1))

    def _start(self, prompt: Prompt, conversation: str | None, prefix_key: str, snap_end: int) -> Start:
        """The starting point that shares the most positions with `prompt` (see the module)."""
        usable = len(prompt) - 1  # at least one position is evaluated: sampling needs its logits

        def shared(keys: tuple[int, ...] | list[int]) -> int:
            n = 0
            for a, b in zip(keys, prompt.keys, strict=False):
                if a != b:
                    break
                n += 1
            return prompt.safe_cut(min(n, usable))

        mine = self.owner is not None and self.owner == conversation
        best = Start(shared(self.session.keys), "conversation" if mine else "prefix")
        own = self.states.get(conversation) if conversation and self.owner != conversation else None
        if own is not None and (n := shared(own.keys)) > best.cached:
            best = Start(n, "conversation", own)
        if 0 < snap_end <= usable and best.cached < snap_end:
            saved = self.states.get(PREFIX + prefix_key)
            source = "prefix"
            if saved is None or saved.keys != prompt.keys[:snap_end]:
                saved, source = (self.disk.load(prompt.keys[:snap_end]) if self.disk is not None else None), "saved"
                if saved is not None:
                    self.states.put(PREFIX + prefix_key, saved)
            if saved is not None:
                best = Start(snap_end, source, saved)
        if best.cached == 0:
            return Start(0, "cold")
        return best

    def _switch(self, start: Start, conversation: str | None) -> Start:
        """Make the cache hold `start`'s positions, setting aside the conversation it held if that would
        lose any of it; the start as it happened."""
        session = self.session
        losing = start.state is not None or start.cached < len(session.keys)
        if self.owner is not None and self.owner != conversation and losing and session.keys:
            self.states.put(self.owner, session.snapshot())
        if start.state is not None and not session.restore(start.state):
            self._forget(start.state)
            start = Start(0, "cold")  # refused (never with matching files): computed afresh
        session.cut(start.cached)
        if conversation is not None:
            self.states.pop(conversation)  # the cache holds its newest positions now
        self.owner = conversation
        return start

    def _forget(self, state: State) -> None:
        """A snapshot llama.cpp refused is dropped, from memory and from disk (a damaged file whose
        checksum was made to match), so the prefix computed instead is kept in its place."""
        self.states.discard(state)
        if self.disk is not None and (path := self.disk.path_for(state.keys)).is_file():
            self.disk.drop(path, "llama.cpp refused its state")

    def _keep_prefix(self, prefix_key: str) -> None:
        """Snapshot the character prefix the cache holds now, for later conversations and restarts."""
        state = self.session.snapshot()
        self.states.put(PREFIX + prefix_key, state)
        if self.disk is not None and not self.disk.path_for(state.keys).is_file():
            self.disk.save(state)

    def _prefill(
        self,
        prompt: Prompt,
        request: ReplyRequest,
        snap_end: int,
        phase: Callable[[Text], None],
        stats: GenerationStats,
        cancel: Callable[[], bool],
    ) -> None:
        start = self._start(prompt, request.conversation_key, request.prefix.key, snap_end)
        start = self._switch(start, request.conversation_key)
        stats.cache = start.source
        self.hits += start.source == "conversation"
        self.prefix_hits += start.source in ("prefix", "saved")
        self.misses += start.source == "cold"
        evaluated = 0
        if len(self.session.keys) < snap_end:  # a character prefix not kept yet: keep it on the way
            evaluated += self.session.evaluate(prompt, snap_end, phase, cancel, snap_end)
            self._keep_prefix(request.prefix.key)
        evaluated += self.session.evaluate(prompt, len(prompt), phase, cancel, snap_end)
        stats.prefilled_tokens = evaluated

    # -- warming up -------------------------------------------------------------------------------
    def warm(self, prefix: CharacterPrompt, yield_to: Callable[[], bool] | None = None) -> bool:
        """Evaluate a character's prefix now (instruction and sheets: the projector's work) and keep it,
        so its first reply starts warm. Only when the model is free, and it gives way: when a request
        arrives (`yield_to`) it stops at the next picture. True once the prefix is kept (now or before)."""
        yield_to = yield_to or (lambda: self.gate.waiting > 0)
        if prefix.sheets and not self.handle.image_tokens:
            return True  # a model without its projector: nothing it could look at ahead of time
        prompt = self.prefix_prompt(prefix)
        end = len(prompt) - 1
        if end <= 0:
            return True

        def kept() -> bool:
            state = self.states.get(PREFIX + prefix.key)
            if state is not None and state.keys == prompt.keys[:end]:
                return True
            return self.disk is not None and self.disk.path_for(prompt.keys[:end]).is_file()

        if kept():
            return True
        if not self.gate.idle or yield_to():
            return False
        with self.gate.turn():
            if kept():  # a reply made it meanwhile
                return True

            def work() -> None:
                session = self.session
                n = 0
                for a, b in zip(session.keys, prompt.keys[:end], strict=False):
                    if a != b:
                        break
                    n += 1
                self._switch(Start(prompt.safe_cut(n), "cold"), None)
                session.evaluate(prompt, end, None, yield_to, end)
                self._keep_prefix(prefix.key)

            try:
                model_thread.submit(work).result()
            except Cancelled:
                return False
        return True

    def flush(self) -> None:
        if self.disk is not None:
            self.disk.flush()

    # -- generation -------------------------------------------------------------------------------
    def stream(
        self, request: ReplyRequest, stop: threading.Event | None = None, on_progress: OnProgress | None = None
    ) -> ReplyStream:
        """Start a reply; iterate the result for text. Nothing runs until iteration begins."""
        stats = GenerationStats()
        return ReplyStream(self._chunks(request, stop or threading.Event(), on_progress, stats), stats)

    def _chunks(
        self, request: ReplyRequest, stop: threading.Event, on_progress: OnProgress | None, stats: GenerationStats
    ) -> Iterator[str]:
        queued_at = time.perf_counter()
        report = Reporter(on_progress, queued_at)
        with self.gate.turn(lambda ahead: report(Text("progress.queued", {"ahead": ahead})), stop):
            started = time.perf_counter()
            stats.queued_s = started - queued_at
            messages, images, stats.dropped_turns = self.fit(request)
            prompt = self.encoder.prompt(messages, images, request.continuation)
            stats.prompt_tokens = len(prompt)
            snap_end = self._prefix_end(prompt, request.prefix)
            pipe = Pipe()
            first: list[float] = []
            finish: list[str] = []

            def work() -> None:
                try:
                    self._prefill(prompt, request, snap_end, pipe.put, stats, stop.is_set)
                    pipe.put(Text("progress.thinking"))
                    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                    for piece in self.session.generate(request.sampler, stop):
                        if not first:
                            first.append(time.perf_counter())
                        stats.new_tokens += 1
                        if text := decoder.decode(piece):
                            pipe.put(text)
                    if text := decoder.decode(b"", final=True):
                        pipe.put(text)
                    finish.append(self.session.finish)
                except Cancelled:  # Stop while the prompt was being read
                    finish.append("user")
                finally:
                    pipe.end()

            done = model_thread.submit(work)  # all llama.cpp work on the one model thread
            try:
                yield from relay(pipe.items(tick=0.5), stats, report, started, stop)
            finally:
                done.result()
                finished = time.perf_counter()
                stats.stopped = stop.is_set()
                stats.finish = "user" if stats.stopped else (finish[0] if finish else "")
                stats.total_s = finished - started
                if first:
                    stats.ttft_s = first[0] - started
                    decode_s = finished - first[0]
                    stats.tokens_per_s = (stats.new_tokens - 1) / decode_s if decode_s > 0 else 0.0
