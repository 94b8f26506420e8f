"""Streaming in-character replies from a loaded Gemma 3, one request at a time.

The path of one reply: `ReplyRequest` (character prefix + history + sampler) → fit the history to
the context budget → encode (chat template, image soft tokens, pixel values cached by sha256) →
prefill the prompt into a KV cache → `model.generate` streams the rest through a streamer
(`core.model.backends.gemma.streaming`), with sampler settings from `core.base.sampling`.
Prefill and generate are split so a warm cache can skip what it already holds: `core.model.backends.gemma.kvcache`
says where to start; without it every turn starts cold, as the upstream demo does.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core.base.i18n import Text
from core.base.sheets import Picture
from core.model.backend import Cancelled, GenerationStats, OnProgress, ReplyRequest, ReplyStream, Reporter
from core.model.backends import model_thread
from core.model.backends.gemma.control import ControlTokens
from core.model.backends.gemma.kvcache import KVStore
from core.model.backends.gemma.model import ModelHandle
from core.model.backends.gemma.streaming import TokenStreamer, stop_criterion
from core.model.backends.inprocess import FifoGate, relay
from core.model.context import fit
from core.model.prompts import CharacterPrompt, build_messages, prefix_message


@dataclass
class Encoded:
    """A tokenised prompt and where its images sit."""

    input_ids: Any  # LongTensor [1, n]
    token_type_ids: Any  # LongTensor [1, n]; 1 on image soft tokens
    images: list[Picture]
    boi_positions: list[int]
    prefix_ids: list[int]  # the character prefix alone, generation prompt included

    @property
    def prefix_len(self) -> int:
        return len(self.prefix_ids)

    @property
    def ids(self) -> list[int]:
        return self.input_ids[0].tolist()

    def __len__(self) -> int:
        return int(self.input_ids.shape[1])


class PixelCache:
    """Pixel values by image sha256, so a sheet is decoded and resized once per process."""

    def __init__(self, processor: Any, dtype: Any, max_items: int = 32) -> None:
        self._processor, self._dtype, self._max = processor, dtype, max_items
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, image: Picture) -> Any:
        with self._lock:
            if image.sha256 in self._items:
                self._items.move_to_end(image.sha256)
                self.hits += 1
                return self._items[image.sha256]
        pixels = self._processor.image_processor(images=[image.pixels()], return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self._dtype)
        with self._lock:
            self.misses += 1
            self._items[image.sha256] = pixels
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return pixels


def new_cache(handle: ModelHandle) -> Any:
    """An empty KV cache with the model's layer kinds (sliding-window and global)."""
    from transformers import DynamicCache

    return DynamicCache(config=handle.model.config)


class ChatEngine:
    """Serves replies from one model handle; every request passes one FIFO gate."""

    def __init__(self, handle: ModelHandle, kv_store: KVStore | None = None) -> None:
        self.handle = handle
        self.gate = FifoGate()
        self.pixels = PixelCache(handle.processor, handle.model.dtype)
        self.kv = kv_store  # None: every turn starts cold, as the upstream demo does
        self._controls: ControlTokens | None = None

    # -- encoding ---------------------------------------------------------------------------------
    def encode(
        self,
        messages: list[dict[str, Any]],
        images: Sequence[Picture],
        prefix_ids: Sequence[int] = (),
        continuation: str = "",
    ) -> Encoded:
        """Tokenise messages exactly as the processor would, without re-processing cached images;
        `continuation` is the model's reply so far, which it carries on from."""

        import torch

        processor, control = self.handle.processor, self._control()
        tok = processor.tokenizer
        text = processor.apply_chat_template(
            [control.message(m) for m in messages], tokenize=False, add_generation_prompt=True
        ) + control.escape(continuation)
        text = text.replace(processor.boi_token, processor.full_image_sequence)
        ids = torch.tensor([control.ids(text)], dtype=torch.long)
        boi = [i for i, v in enumerate(ids[0].tolist()) if v == tok.boi_token_id]
        if len(boi) != len(images):
            raise ValueError(f"{len(boi)} image placeholders for {len(images)} images")
        token_type_ids = (ids == tok.image_token_id).long()
        return Encoded(ids, token_type_ids, list(images), boi, list(prefix_ids))

    def token_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of a conversation (images as their soft tokens), without pixel work."""
        processor, control = self.handle.processor, self._control()
        text = processor.apply_chat_template(
            [control.message(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return control.ids(text.replace(processor.boi_token, processor.full_image_sequence))

    def _control(self) -> ControlTokens:
        """The tokenizer's control tokens, found once (see `core.model.backends.gemma.control`)."""
        if self._controls is None:
            self._controls = ControlTokens(self.handle.processor.tokenizer)
        return self._controls

    def count_tokens(self, messages: list[dict[str, Any]]) -> int:
        return len(self.token_ids(messages))

    def request_tokens(self, request: ReplyRequest) -> int:
        """Tokens of the whole prompt a request makes, before any trimming."""
        return self.count_tokens(build_messages(request.prefix, request.history)[0])

    def new_cache(self) -> Any:
        return new_cache(self.handle)

    def cache_report(self) -> dict[str, Any]:
        """For the model status: KV and pixel cache use."""
        report = self.kv.report() if self.kv is not None else {}
        return {**report, "pixel_hits": self.pixels.hits, "pixel_misses": self.pixels.misses} if report else {}

    def fit(self, request: ReplyRequest) -> tuple[list[dict[str, Any]], list[Picture], int]:
        """Messages that fit the context budget, dropping the oldest turns (never the prefix)."""
        return fit(request, self.count_tokens, self.handle.context_limit)

    # -- warming up -------------------------------------------------------------------------------
    def warm(self, prefix: CharacterPrompt, yield_to: Callable[[], bool] | None = None) -> bool:
        """Encode a character's prefix now (instruction and sheets, the vision tower's work) and keep
        it, so its first reply starts warm. Only when the model is free, and it gives way: when a
        request arrives (`yield_to`, by default "someone is waiting") it stops at the next picture
        and keeps nothing. True once the prefix is kept (now or before)."""
        if self.kv is None:
            return False
        yield_to = yield_to or (lambda: self.gate.waiting > 0)
        message = prefix_message(prefix)
        prefix_ids = self.token_ids([message])
        end = len(prefix_ids) - 1  # what a reply's snapshot holds (see KVStore.start)
        if self.kv.has_prefix(prefix.key, prefix_ids[:end]):
            return True
        if not self.gate.idle or yield_to():
            return False
        with self.gate.turn():
            if self.kv.has_prefix(prefix.key, prefix_ids[:end]):  # a reply made it meanwhile
                return True
            encoded = self.encode([message], prefix.sheets, prefix_ids)

            def work() -> None:
                import torch

                with torch.no_grad():
                    cache = self.new_cache()
                    self._prefill(encoded, cache, 0, end, cancel=yield_to)
                assert self.kv is not None
                self.kv.keep_prefix(prefix.key, encoded.ids[:end], cache)

            try:
                model_thread.submit(work).result()
            except Cancelled:
                return False
        return True

    # -- generation -------------------------------------------------------------------------------
    def stream(
        self,
        request: ReplyRequest,
        stop: threading.Event | None = None,
        on_progress: OnProgress | None = None,
    ) -> ReplyStream:
        """Start a reply; iterate the result for text. Nothing runs until iteration begins.

        `on_progress` hears, on the iterating thread, what the reply is waiting for: the queue, each
        picture being looked at, the conversation being read, thinking, then writing."""
        stats = GenerationStats()
        return ReplyStream(self._chunks(request, stop or threading.Event(), on_progress, stats), stats)

    def _chunks(
        self,
        request: ReplyRequest,
        stop: threading.Event,
        on_progress: OnProgress | None,
        stats: GenerationStats,
    ) -> Iterator[str]:
        queued_at = time.perf_counter()
        report = Reporter(on_progress, queued_at)
        with self.gate.turn(lambda ahead: report(Text("progress.queued", {"ahead": ahead})), stop):
            started = time.perf_counter()
            stats.queued_s = started - queued_at
            messages, images, stats.dropped_turns = self.fit(request)
            prefix_ids = self.token_ids([prefix_message(request.prefix)])
            encoded = self.encode(messages, images, prefix_ids, request.continuation)
            stats.prompt_tokens = len(encoded)
            streamer = TokenStreamer(self.handle.tokenizer, stats)
            failure: list[BaseException] = []

            def work() -> None:
                try:
                    self._generate(encoded, request, streamer, stop, stats)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                    failure.append(exc)
                    streamer.end()

            done = model_thread.submit(work)  # all torch work on the one model thread
            try:
                yield from relay(streamer.items(tick=0.5), stats, report, started, stop)
            finally:
                done.result()
                finished = time.perf_counter()
                stats.stopped = stop.is_set()
                reached = stats.new_tokens >= request.sampler.max_new_tokens
                stats.finish = "user" if stats.stopped else "length" if reached else "stop"
                stats.total_s = finished - started
                if streamer.first_token_at is not None:
                    stats.ttft_s = streamer.first_token_at - started
                    decode_s = finished - streamer.first_token_at
                    stats.tokens_per_s = (stats.new_tokens - 1) / decode_s if decode_s > 0 else 0.0
            if failure:
                raise failure[0]

    def _generate(
        self, encoded: Encoded, request: ReplyRequest, streamer: Any, stop: threading.Event, stats: GenerationStats
    ) -> None:
        import torch

        model = self.handle.model
        device = model.device
        if request.sampler.seed is not None:
            torch.manual_seed(request.sampler.seed)
        with torch.no_grad():
            cache, cached, stats.cache = self._starting_cache(encoded, request, streamer.phase)
            n = len(encoded)
            # A cold start may already have run the prefix (to snapshot it): that work counts too.
            stats.prefilled_tokens = n if stats.cache == "cold" else n - cached
            self._prefill(encoded, cache, cached, n - 1, streamer.phase)
            streamer.phase(Text("progress.thinking"))
            input_ids = encoded.input_ids.to(device)
            output = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                cache=cache,
                streamer=streamer,
                stopping_criteria=[stop_criterion(stop)],
                pad_token_id=self.handle.tokenizer.pad_token_id,
                **request.sampler.generate_kwargs(),
            )
        if self.kv is not None:
            self.kv.remember(request.conversation_key, output[0, :-1].tolist(), cache)

    def _starting_cache(
        self, encoded: Encoded, request: ReplyRequest, phase: Callable[[Text], None] | None = None
    ) -> tuple[Any, int, str]:
        """A cache, how many prompt tokens it already holds, and where it came from."""
        if self.kv is None:
            return self.new_cache(), 0, "cold"
        start = self.kv.start(encoded.ids, request.conversation_key, request.prefix.key, encoded.prefix_ids)
        if start.cache is not None:
            return start.cache, start.cached, start.source
        cache = self.new_cache()
        if start.snapshot_end:  # a character seen for the first time: keep its prefix for next time
            self._prefill(encoded, cache, 0, start.snapshot_end, phase)
            self.kv.keep_prefix(request.prefix.key, encoded.ids[: start.snapshot_end], cache)
        return cache, start.snapshot_end, "cold"

    def _prefill(
        self,
        encoded: Encoded,
        cache: Any,
        start: int,
        end: int,
        phase: Callable[[Text], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        """Run prompt tokens [start, end) into `cache`, encoding only the images inside that span.

        It goes one picture at a time (each span ends just after an image), so `phase` can say which
        picture is being looked at (on a CPU one 896 px sheet takes most of a minute), and a warm-up
        can give way between pictures (`cancel` true: raise `Cancelled`)."""
        if end <= start:
            return
        inside = [k for k, pos in enumerate(encoded.boi_positions) if start <= pos < end]
        # Each image is <start_of_image>, its soft tokens, <end_of_image>: cut right after the last.
        cuts = [min(encoded.boi_positions[k] + self.handle.image_tokens + 2, end) for k in inside]
        bounds = sorted({start, *cuts, end})
        for a, b in itertools.pairwise(bounds):
            if cancel is not None and cancel():
                raise Cancelled
            here = [k for k in inside if a <= encoded.boi_positions[k] < b]
            if phase is not None:
                if here:
                    k = here[0]
                    key = "progress.sheet" if encoded.boi_positions[k] < encoded.prefix_len else "progress.picture"
                    phase(Text(key, {"n": inside.index(k) + 1, "of": len(inside)}))
                else:
                    phase(Text("progress.reading", {"tokens": end - start}))
            self._forward(encoded, cache, a, b, here)

    def _forward(self, encoded: Encoded, cache: Any, start: int, end: int, images: list[int]) -> None:
        model = self.handle.model
        device = model.device
        kwargs: dict[str, Any] = {}
        if images:
            import torch

            kwargs["pixel_values"] = torch.cat([self.pixels.get(encoded.images[k]) for k in images]).to(device)
            # The bidirectional image mask reads token types by position, from the sequence start.
            kwargs["token_type_ids"] = encoded.token_type_ids[:, :end].to(device)
        model(
            input_ids=encoded.input_ids[:, start:end].to(device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
