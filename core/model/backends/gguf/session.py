"""llama.cpp's one sequence, position by position: what it holds, evaluating more, sampling, snapshots.

`Session.keys` are the keys (`core.model.backends.gguf.prompt`) of the positions the KV cache holds.
`evaluate` keeps the longest part of them a new prompt shares (never cutting a picture in two) and
runs only the rest: text through `Llama.eval`, each picture through libmtmd (the projector, then its
soft tokens). Gemma 3's sliding-window layers keep every position here (`swa_full`), so the cache can
be cut anywhere. Sampling is llama.cpp's native chain, token by token, so a caller can stream and stop
between tokens. Everything here runs on the model thread.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

from core.base.i18n import Text
from core.base.sampling import SamplerSettings
from core.model.backend import Cancelled
from core.model.backends.gguf.model import GGUFHandle
from core.model.backends.gguf.prompt import Prompt, image_chunks
from core.model.backends.gguf.states import State

Phase = Callable[[Text], None]


class Session:
    def __init__(self, handle: GGUFHandle) -> None:
        self.handle = handle
        self.llm = handle.llm
        self.keys: list[int] = []
        self.projector_calls = 0  # pictures encoded (the vision tower's work), for the tests and the status
        self._eog: list[int] | None = None

    # -- what the cache holds ---------------------------------------------------------------------
    def cut(self, at: int) -> None:
        """Keep positions [0, at) and drop the rest (and whatever a failed evaluation left past them)."""
        at = min(at, len(self.keys))
        if not self.llm._ctx.kv_cache_seq_rm(0, at, -1):
            at = 0  # a cache that cannot drop a suffix (not the case with swa_full): start over
            self.llm._ctx.kv_cache_clear()
        del self.keys[at:]
        self.llm.n_tokens = at  # `Llama.eval` writes at n_tokens: it must match what the cache holds

    def snapshot(self) -> State:
        """The KV cells of every position held (no logits: evaluate one position before sampling again)."""
        import llama_cpp

        ctx = self.llm.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        return State(tuple(self.keys), ctypes.string_at(buffer, written))

    def restore(self, state: State) -> bool:
        """Put a snapshot in the cache instead of what it holds; False (and an empty cache) if llama.cpp
        refuses it (a state of another shape) or it does not end where its keys do
        (another prompt's state under this one's keys: replies would read the wrong conversation)."""
        import llama_cpp

        self.llm._ctx.kv_cache_clear()
        self.keys, self.llm.n_tokens = [], 0
        source = (ctypes.c_uint8 * state.nbytes).from_buffer_copy(state.data)
        if not state.data or llama_cpp.llama_state_seq_set_data(self.llm.ctx, source, state.nbytes, 0) == 0:
            self.llm._ctx.kv_cache_clear()
            return False
        # The last position only: the sliding-window layers' cache may report a later first one.
        if llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(self.llm.ctx), 0) != len(state.keys) - 1:
            self.llm._ctx.kv_cache_clear()
            return False
        self.keys = list(state.keys)
        self.llm.n_tokens = len(self.keys)
        return True

    # -- evaluating -------------------------------------------------------------------------------
    def evaluate(
        self,
        prompt: Prompt,
        end: int,
        phase: Phase | None = None,
        cancel: Callable[[], bool] | None = None,
        prefix_len: int = 0,
    ) -> int:
        """Evaluate the prompt's positions from what the cache already holds (which must be a prefix of
        it) up to `end`; return how many were evaluated. One picture at a time, so `phase` can say which
        one is being looked at (a sheet when it is inside the first `prefix_len` positions, else a
        picture of the chat) and `cancel` (true: raise `Cancelled`) can stop between pictures and batches."""
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        llm, start = self.llm, len(self.keys)
        if list(prompt.keys[:start]) != self.keys:
            raise ValueError("the cache does not hold a prefix of this prompt")
        spans = [s for s in prompt.spans if s.end > start and s.start < end]
        pictures = [s for s in spans if s.image is not None]
        for span in spans:
            if cancel is not None and cancel():
                raise Cancelled
            if span.image is None:
                if phase is not None:
                    phase(Text("progress.reading", {"tokens": end - start}))
                tokens = list(span.tokens[max(start, span.start) - span.start : min(end, span.end) - span.start])
                for i in range(0, len(tokens), llm.n_batch):
                    if i and cancel is not None and cancel():
                        raise Cancelled
                    batch = tokens[i : i + llm.n_batch]
                    llm.eval(batch)
                    self.keys.extend(batch)
                continue
            if span.start < start or span.end > end:
                raise ValueError("a picture is evaluated whole")
            if phase is not None:
                key = "progress.sheet" if span.start < prefix_len else "progress.picture"
                phase(Text(key, {"n": pictures.index(span) + 1, "of": len(pictures)}))
            with image_chunks(self.handle.mtmd, span.image, span.image.sha256) as (_chunks, chunk):
                after = llama_cpp.llama_pos(0)
                failed = mtmd.mtmd_helper_eval_chunk_single(
                    self.handle.mtmd, llm.ctx, chunk, span.start, 0, llm.n_batch, span.end == end, ctypes.byref(after)
                )
            if failed:
                raise RuntimeError(f"llama.cpp could not evaluate a picture ({failed})")
            self.projector_calls += 1
            self.keys.extend(prompt.keys[span.start : span.end])
            llm.n_tokens = after.value
        return len(self.keys) - start

    # -- sampling ---------------------------------------------------------------------------------
    def sampler(self, settings: SamplerSettings, history: list[int]) -> Any:
        """llama.cpp's native chain for `settings`, in transformers' order: repetition penalty (over the
        whole context, as transformers applies it: `history` is accepted into it), temperature, top-k,
        top-p, min-p 0 (llama-cpp-python's default is 0.05; transformers has none), the seed's draw.
        Temperature 0 is greedy."""
        import llama_cpp
        import llama_cpp._internals as internals

        chain = internals.LlamaSampler()
        if settings.repetition_penalty != 1.0:
            chain.add_penalties(self.llm.n_vocab(), self.llm.n_ctx(), settings.repetition_penalty, 0.0, 0.0)
            for token in history:
                if token >= 0:  # a picture's positions are not tokens
                    chain.accept(token)
        if settings.greedy:
            chain.add_greedy()
            return chain
        chain.add_temp(settings.temperature)
        chain.add_top_k(settings.top_k)
        chain.add_top_p(settings.top_p, 1)
        chain.add_min_p(0.0, 1)
        chain.add_dist(llama_cpp.LLAMA_DEFAULT_SEED if settings.seed is None else settings.seed)  # default: random
        return chain

    def generate(self, settings: SamplerSettings, stop: threading.Event) -> Iterator[bytes]:
        """Sample after the evaluated prompt, yielding each token's bytes (end-of-turn is not yielded).
        Each token is evaluated before the next is drawn, so the cache holds the prompt and what was
        yielded (but the last). `self.finish`: "stop" (the model ended), "length" or "user"."""
        import llama_cpp

        llm = self.llm
        vocab = llm._model.vocab
        chain = self.sampler(settings, self.keys)
        self.finish = "length"
        for i in range(settings.max_new_tokens):
            if stop.is_set():
                self.finish = "user"
                return
            if i < settings.min_new_tokens:
                self._forbid_end()
            token = chain.sample(llm._ctx, -1)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                self.finish = "stop"
                return
            yield self.piece(token)
            if i + 1 == settings.max_new_tokens or len(self.keys) + 1 >= llm.n_ctx():
                return  # the last token is not evaluated: nothing will be drawn after it
            llm.eval([token])
            self.keys.append(token)

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens as nothing, as transformers' skip_special_tokens)."""
        import llama_cpp

        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.llm._model.vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    def _forbid_end(self) -> None:
        """No end of turn yet (`min_new_tokens`): its logits go to -inf before the draw."""
        import llama_cpp

        if self._eog is None:
            vocab = self.llm._model.vocab
            self._eog = [t for t in range(self.llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        logits = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        for token in self._eog:
            logits[token] = -math.inf
