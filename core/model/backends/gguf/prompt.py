"""Chat messages → the positions llama.cpp evaluates, each with a key for prefix matching.

The text is the model's chat template (the GGUF's own, or Gemma 3's official one when the file has
none), each picture laid out as transformers' Gemma3Processor does: `\\n\\n<start_of_image>`, its soft
tokens, `<end_of_image>\\n\\n`. Text is tokenized with the model's own tokenizer, segment by segment
between pictures, as libmtmd does; a picture's positions get one negative key from its sha256 (no
token id is negative), so two prompts share a prefix exactly where they hold the same tokens and the
same pictures. Counting needs no pixels: a picture always takes `image_tokens` positions.

Only the template speaks in control tokens: a `<start_of_turn>` or `<start_of_image>` that a person
typed (or a card carries) is text, tokenized as its characters, as a stranger's words must be.
"""

from __future__ import annotations

import ctypes
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from core.base.sheets import Picture
from core.model.backend import BackendError
from core.model.prompts import GEMMA3_TEMPLATE, map_text

BOI, EOI = "<start_of_image>", "<end_of_image>"
AROUND = "\n\n"  # what Gemma3Processor puts either side of a picture

_TAG = re.compile(r"<[^<>]+>")  # how Gemma's control tokens look; any other is matched literally


def control_tokens(llm: Any) -> frozenset[str]:
    """The texts of the vocabulary's control tokens (`<start_of_turn>`, `<start_of_image>`, `<bos>`…):
    those llama.cpp's tokenizer only makes when told to parse special tokens."""
    import llama_cpp

    vocab, wanted = llm._model.vocab, llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    found = (llm.detokenize([i], special=True) for i in range(llm.n_vocab())
             if llama_cpp.llama_vocab_get_attr(vocab, i) & wanted)  # fmt: skip
    return frozenset(text.decode("utf-8", "replace") for text in found if text)


def image_key(sha256: str) -> int:
    """The key of each position of a picture: negative (never a token id), from its content hash."""
    return -1 - int(sha256[:15], 16)


@dataclass(frozen=True)
class Span:
    """Positions [start, end): text `tokens`, or one `image`."""

    start: int
    end: int
    tokens: tuple[int, ...] = ()
    image: Picture | None = None


@dataclass(frozen=True)
class Prompt:
    keys: tuple[int, ...]  # one per position
    spans: tuple[Span, ...]

    def __len__(self) -> int:
        return len(self.keys)

    def safe_cut(self, cut: int) -> int:
        """`cut`, moved back to a picture's start if it falls inside one (a picture is evaluated whole)."""
        for span in self.spans:
            if span.image is not None and span.start < cut < span.end:
                return span.start
        return cut


class Encoder:
    """Renders and tokenizes prompts with one loaded model's template and tokenizer."""

    def __init__(self, llm: Any, image_tokens: int) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.llm, self.image_tokens = llm, image_tokens
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(llm.metadata.get("tokenizer.chat_template") or GEMMA3_TEMPLATE)
        self._bos = llm.detokenize([llm.token_bos()], special=True).decode("utf-8", "replace")
        self._control = control_tokens(llm)
        irregular = [re.escape(t) for t in sorted(self._control, key=len, reverse=True) if not _TAG.fullmatch(t)]
        self._find = re.compile("|".join([*irregular, _TAG.pattern]))
        # Put inside a control token someone typed, until tokenizing: unguessable, so no text can forge
        # it, and removed before llama.cpp reads the text (see `escape`).
        self._mark = f"\ue000{secrets.token_hex(8)}\ue001"
        self._boi, self._eoi = self.tokens(BOI), self.tokens(EOI)

    def _controls(self, text: str) -> Iterator[re.Match[str]]:
        """The control tokens written in `text`, in order."""
        at = 0
        while found := self._find.search(text, at):
            if found.group() in self._control:
                yield found
                at = found.end()
            else:  # `<b>` or the like: a control token may still start inside it
                at = found.start() + 1

    def tokens(self, text: str) -> list[int]:
        """The model's own tokenization: the control tokens in `text` (`<start_of_turn>`…) as themselves,
        the rest as plain text, as llama.cpp itself does it (it splits at control tokens and tokenizes
        the pieces between them); an escaped one (see `escape`) is plain text."""
        out: list[int] = []
        at = 0
        for found in self._controls(text):
            out += self._plain(text[at : found.start()])
            out += self.llm.tokenize(found.group().encode("utf-8"), add_bos=False, special=True)
            at = found.end()
        return out + self._plain(text[at:])

    def _plain(self, text: str) -> list[int]:
        text = text.replace(self._mark, "")
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def escape(self, text: str) -> str:
        """`text` with each control token in it broken by the mark (after its first character), so that
        neither the split at pictures nor `tokens` takes it for one: it is read as the characters typed."""
        out, at = [], 0
        for found in self._controls(text):
            out += [text[at : found.start() + 1], self._mark]
            at = found.start() + 1
        return "".join(out) + text[at:]

    def text(self, messages: list[dict[str, Any]], continuation: str = "") -> str:
        """The rendered prompt; what the messages and `continuation` say is escaped (see `escape`)."""
        escaped = [map_text(m, self.escape) for m in messages]
        rendered = self._template.render(messages=escaped, add_generation_prompt=True, bos_token=self._bos)
        return rendered + self.escape(continuation)

    def segments(self, text: str) -> list[str]:
        """The text between pictures, with the blank lines Gemma3Processor puts around each picture."""
        pieces = text.split(BOI)
        last = len(pieces) - 1
        return [(AROUND if i else "") + piece + (AROUND if i < last else "") for i, piece in enumerate(pieces)]

    def count(self, messages: list[dict[str, Any]]) -> int:
        """Positions of a conversation, pictures included, without looking at a pixel."""
        segments = self.segments(self.text(messages))
        per_picture = len(self._boi) + self.image_tokens + len(self._eoi)
        return sum(len(self.tokens(s)) for s in segments) + (len(segments) - 1) * per_picture

    def prompt(self, messages: list[dict[str, Any]], images: Sequence[Picture], continuation: str = "") -> Prompt:
        """The positions of a conversation (and of the reply so far, for Continue) and what fills them."""
        segments = self.segments(self.text(messages, continuation))
        if len(segments) - 1 != len(images):
            raise ValueError(f"{len(segments) - 1} image placeholders for {len(images)} images")
        if images and not self.image_tokens:
            raise BackendError("gguf_no_vision")
        keys: list[int] = []
        spans: list[Span] = []

        def text(tokens: list[int]) -> None:
            if tokens:
                spans.append(Span(len(keys), len(keys) + len(tokens), tuple(tokens)))
                keys.extend(tokens)

        for i, segment in enumerate(segments):
            if i:
                image = images[i - 1]
                spans.append(Span(len(keys), len(keys) + self.image_tokens, image=image))
                keys.extend([image_key(image.sha256)] * self.image_tokens)
                text(self._eoi + self.tokens(segment))
            else:
                text(self.tokens(segment))
            if i < len(images):
                text(self._boi)
        return Prompt(tuple(keys), tuple(_merged(spans)))


def _merged(spans: list[Span]) -> list[Span]:
    """Adjacent text spans joined (one evaluation call each)."""
    out: list[Span] = []
    for span in spans:
        if out and span.image is None and out[-1].image is None:
            out[-1] = Span(out[-1].start, span.end, out[-1].tokens + span.tokens)
        else:
            out.append(span)
    return out


def _raise(message: str) -> None:
    raise ValueError(message)


@contextmanager
def image_chunks(ctx: Any, picture: Picture | bytes, key: str) -> Iterator[tuple[Any, Any]]:
    """libmtmd's chunks for one picture (decoded by Pillow, as the app decodes every picture, so a
    damaged one is `ImageRejected` naming it), and its image chunk; freed on exit."""
    import llama_cpp.mtmd_cpp as mtmd

    from core.base.sheets import decode

    image = picture.pixels() if isinstance(picture, Picture) else decode(picture)
    raw = image.tobytes()
    bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, (ctypes.c_uint8 * len(raw)).from_buffer_copy(raw))
    if not bitmap:
        raise ValueError("libmtmd could not take the picture")
    chunks = mtmd.mtmd_input_chunks_init()
    try:
        mtmd.mtmd_bitmap_set_id(bitmap, key.encode())
        marker = mtmd.mtmd_default_marker()
        text = mtmd.mtmd_input_text()
        text.text, text.text_len, text.add_special, text.parse_special = marker, len(marker), False, True
        result = mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1)
        if result != 0:
            raise ValueError(f"libmtmd could not tokenize the picture ({result})")
        found = [
            chunk
            for i in range(mtmd.mtmd_input_chunks_size(chunks))
            if mtmd.mtmd_input_chunk_get_type(chunk := mtmd.mtmd_input_chunks_get(chunks, i))
            == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
        ]
        if len(found) != 1:
            raise ValueError(f"libmtmd made {len(found)} image chunks of one picture")
        yield chunks, found[0]
    finally:
        mtmd.mtmd_bitmap_free(bitmap)  # the chunks hold their own preprocessed copy
        mtmd.mtmd_input_chunks_free(chunks)
