"""Loading Gemma 3: a hub id or a local folder, 4-bit / 8-bit / bf16, CPU or CUDA.

`load_model(settings)` returns a `ModelHandle` or raises `ModelLoadError` whose message tells the
user what to do (accept the licence and set HF_TOKEN, give a local folder, pick 4bit…).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.base.i18n import Text
from core.base.settings import Settings
from core.model.backend import BackendError, Progress

DEFAULT_CONTEXT_CAP = 8192
# Quantizing SigLIP and the projector saves little and its 4304-wide MLP breaks bitsandbytes' CPU
# NF4 kernel; lm_head stays full precision as bitsandbytes recommends.
KEEP_UNQUANTIZED = [r".*vision_tower", r".*multi_modal_projector", "lm_head"]  # regexes over module paths
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer*", "*.model", "*.txt"]


class ModelLoadError(BackendError):
    """Why the model could not be loaded, as an instruction (`code` picks the i18n message)."""


@dataclass
class ModelHandle:
    """A loaded model and everything needed to use it."""

    model: Any
    processor: Any
    source: str
    device: str
    dtype: Any
    quantization: str  # what is in effect, which may differ from what was asked
    footprint_bytes: int
    load_seconds: float
    context_limit: int
    notice: Text | None = None  # e.g. the bf16 fallback when bitsandbytes cannot run
    revision: str = ""  # which weights exactly (`folder_revision`)

    @property
    def identity(self) -> dict[str, str]:
        """Everything a KV cache computed by this model depends on: a cache saved under another
        identity is never reused."""
        import transformers

        return {
            "source": self.source,
            "revision": self.revision,
            "quantization": self.quantization,
            "dtype": str(self.dtype),
            "device": self.device,
            "transformers": transformers.__version__,
        }

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def image_tokens(self) -> int:
        return int(self.model.config.mm_tokens_per_image)


def resolve_device(requested: str) -> str:
    """`auto`: CUDA where torch sees a GPU, else Apple's MPS where torch reports it (a Mac with Apple
    silicon; not testable on these Linux machines), else the CPU."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("no_cuda")
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    return requested


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of CPUs with bf16 in hardware


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags where the system tells them (Linux); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def resolve_dtype(requested: str, device: str, flags: frozenset[str] | None = None) -> str:
    """`auto`: bfloat16 on CUDA, MPS and CPUs that compute it natively; float32 on other CPUs, where
    bfloat16 is emulated and about 3× slower (SigLIP on an AVX2 CPU: 130 s a sheet vs 46 s)."""
    if requested != "auto":
        return requested
    if device in ("cuda", "mps"):
        return "bfloat16"
    return "bfloat16" if (cpu_flags() if flags is None else flags) & NATIVE_BF16_FLAGS else "float32"


MPS_NO_BNB = "bitsandbytes has no kernels for Apple's MPS"


def bitsandbytes_problem() -> str:
    """Empty when bitsandbytes can quantize here, else the reason."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable"
        return f"{type(exc).__name__}: {exc}"
    return ""


def looks_like_path(source: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else is meant as a folder."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def resolve_source(settings: Settings, progress: Progress) -> Path:
    """A local folder holding the checkpoint, downloading it from the hub if needed."""
    source = settings.model_id
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if looks_like_path(source):
        raise ModelLoadError("missing_folder", source=source)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    progress(Text("model.phase.download", {"source": source}))
    try:
        return Path(
            snapshot_download(
                source, token=settings.hf_token, allow_patterns=WEIGHT_PATTERNS, local_files_only=settings.offline
            )
        )
    except GatedRepoError as exc:
        raise ModelLoadError("gated", source=source) from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError("not_found", source=source) from exc
    except LocalEntryNotFoundError as exc:
        raise ModelLoadError("offline", source=source) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise ModelLoadError("gated", source=source) from exc
        raise ModelLoadError("offline", source=source) from exc
    except OSError as exc:  # no network at all
        raise ModelLoadError("offline", source=source) from exc


class _SayOnce(logging.Filter):
    """bitsandbytes logs its 8-bit cast notice on every matmul (thousands a reply): keep the first."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


_BNB_MATMUL_LOG = logging.getLogger("bitsandbytes.autograd._functions")
if not any(isinstance(f, _SayOnce) for f in _BNB_MATMUL_LOG.filters):
    _BNB_MATMUL_LOG.addFilter(_SayOnce())


def _quantization_config(quantization: str, dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,  # the model's dtype, bf16 or fp32: fp16 gives Gemma 3 empty output
            llm_int8_skip_modules=KEEP_UNQUANTIZED,
        )
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=KEEP_UNQUANTIZED)
    return None


def load_model(settings: Settings, progress: Progress | None = None) -> ModelHandle:
    """Load the configured Gemma 3 checkpoint. Raises `ModelLoadError` with an instruction."""
    import torch
    from transformers import AutoConfig, AutoProcessor, Gemma3ForConditionalGeneration

    progress = progress or (lambda _phase: None)
    started = time.perf_counter()
    device = resolve_device(settings.device)
    folder = resolve_source(settings, progress)
    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelLoadError("not_a_checkpoint", source=settings.model_id) from exc
    if config.model_type == "gemma3_text" or getattr(config, "vision_config", None) is None:
        raise ModelLoadError("text_only", source=settings.model_id)
    if config.model_type != "gemma3":
        raise ModelLoadError("not_gemma3", source=settings.model_id, model_type=config.model_type)

    quantization, notice = settings.quantization, None
    if quantization != "none" and (problem := MPS_NO_BNB if device == "mps" else bitsandbytes_problem()):
        quantization = "none"
        notice = Text("model.notice.no_bnb", {"requested": settings.quantization, "reason": problem})
    dtype_name = resolve_dtype(settings.dtype, device)
    progress(Text("model.phase.load", {"quantization": quantization, "device": device, "dtype": dtype_name}))
    dtype = getattr(torch, dtype_name)
    try:
        model = Gemma3ForConditionalGeneration.from_pretrained(
            folder,
            dtype=dtype,
            quantization_config=_quantization_config(quantization, dtype),
            device_map=device,
        )
        processor = AutoProcessor.from_pretrained(folder)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        gc.collect()
        raise ModelLoadError("oom", source=settings.model_id, quantization=quantization) from exc
    except RuntimeError as exc:
        if "out of memory" in str(exc).lower():
            gc.collect()
            raise ModelLoadError("oom", source=settings.model_id, quantization=quantization) from exc
        raise
    model.eval()
    text_config = config.get_text_config()
    context = settings.context_tokens or min(int(text_config.max_position_embeddings), DEFAULT_CONTEXT_CAP)
    return ModelHandle(
        model=model,
        processor=processor,
        source=settings.model_id,
        device=device,
        dtype=dtype,
        quantization=quantization,
        footprint_bytes=int(model.get_memory_footprint()),
        load_seconds=time.perf_counter() - started,
        context_limit=context,
        notice=notice,
        revision=folder_revision(folder),
    )


def folder_revision(folder: Path) -> str:
    """A fingerprint of a checkpoint folder's files (names, sizes, modification times): a hub
    snapshot or a local folder, rebuilt or replaced in place, gets a new one."""
    import hashlib

    entries = sorted(
        f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
        for path in folder.iterdir()
        if path.is_file() and (stat := path.stat())
    )
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]
