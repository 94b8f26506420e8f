"""Loading a Gemma 3 GGUF and its vision projector (mmproj) with llama.cpp.

The files are local paths (`REFSHEET_GGUF_MODEL`, `REFSHEET_GGUF_MMPROJ`) or a hub repository and
two file names (`REFSHEET_GGUF_REPO`, `REFSHEET_GGUF_FILE`, `REFSHEET_GGUF_MMPROJ_FILE`), downloaded
once with huggingface_hub. `load_gguf(settings, progress)` returns a `GGUFHandle` or raises a
`BackendError` that says what to do. Where the llama-cpp-python wheel was built with Metal or CUDA
every layer goes to the GPU; elsewhere the CPU runs it with one thread per physical core.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import io
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.base.i18n import Text
from core.base.settings import Settings
from core.model.backend import BackendError, Progress

ENGINE = "llama.cpp"
DEFAULT_CONTEXT_CAP = 8192  # as the transformers backend: the KV cache is allocated for all of it
# One batch holds a whole picture: Gemma 3's image attention is bidirectional, so llama.cpp needs every
# soft token of an image in one micro-batch (256 for Gemma 3; a smaller batch aborts or silently miscomputes).
BATCH = 512


@dataclass(frozen=True)
class GGUFFiles:
    model: Path
    mmproj: Path | None
    source: str  # as people name it: a path, or "repo: file"


@dataclass
class GGUFHandle:
    """A loaded GGUF (`llm`, a `llama_cpp.Llama`) and its projector (`mtmd`, an mtmd context or None)."""

    llm: Any
    mtmd: Any
    files: GGUFFiles
    gpu: bool
    threads: int
    context_limit: int
    image_tokens: int  # positions one picture takes (its soft tokens), 0 without a projector
    kind: str  # llama.cpp's words for the weights, e.g. "Q4_K - Medium"
    footprint_bytes: int
    load_seconds: float
    identity: dict[str, str] = field(default_factory=dict)  # what a saved KV state depends on
    notice: Text | None = None
    _closed: bool = False

    @property
    def device(self) -> str:
        return "gpu" if self.gpu else "cpu"

    def close(self) -> None:
        """Free the projector, then the model (explicitly: left to the interpreter's exit, mtmd's logging
        meets closed streams)."""
        if not self._closed:
            self._closed = True
            self.llm.close()


def physical_cores() -> int:
    """Threads for llama.cpp: one per physical core this process may use (hyper-threads only contend)."""
    usable = usable_cpus()
    cores = 0
    if sys.platform == "linux":
        found = set()
        for cpu in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"):
            with contextlib.suppress(OSError):
                topology = cpu / "topology"
                found.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        cores = len(found)
    elif sys.platform == "darwin":
        with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
            run = subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True, timeout=5)
            cores = int(run.stdout.strip())
    else:  # Windows: assume two hardware threads a core, as llama-cpp-python's own default does
        cores = usable // 2
    return max(1, min(cores or usable, usable))


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_count(asked: int) -> int:
    """Threads for llama.cpp: `REFSHEET_GGUF_THREADS`, at most one per logical CPU this process may use
    (its threads spin while they wait: more only contend, and a huge number crashes the process when
    they cannot all be started); 0: one per physical core."""
    return max(1, min(asked, usable_cpus())) if asked > 0 else physical_cores()


def file_identity(path: Path) -> str:
    """Which file exactly: name, size, modification time and a hash of its first MiB (the GGUF header
    and metadata). A replaced or rebuilt file gets a new identity."""
    stat = path.stat()
    with path.open("rb") as fh:
        head = hashlib.sha256(fh.read(2**20)).hexdigest()[:16]
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}:{head}"


def resolve_files(settings: Settings, progress: Progress) -> GGUFFiles:
    """Local files where the settings name them; otherwise the repository's, downloaded once."""
    if settings.gguf_model:
        model = Path(settings.gguf_model).expanduser()
        if not model.is_file():
            raise BackendError("gguf_missing_file", source=settings.gguf_model, setting="REFSHEET_GGUF_MODEL")
        mmproj = None
        if settings.gguf_mmproj:
            mmproj = Path(settings.gguf_mmproj).expanduser()
            if not mmproj.is_file():
                raise BackendError("gguf_missing_file", source=settings.gguf_mmproj, setting="REFSHEET_GGUF_MMPROJ")
        return GGUFFiles(model, mmproj, str(model))
    model = _download(settings, settings.gguf_file, progress)
    mmproj = _download(settings, settings.gguf_mmproj_file, progress) if settings.gguf_mmproj_file else None
    return GGUFFiles(model, mmproj, f"{settings.gguf_repo}: {settings.gguf_file}")


def _download(settings: Settings, filename: str, progress: Progress) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo = settings.gguf_repo
    progress(Text("model.phase.download", {"source": f"{repo}/{filename}"}))
    try:
        return Path(hf_hub_download(repo, filename, token=settings.hf_token, local_files_only=settings.offline))
    except GatedRepoError as exc:
        raise BackendError("gated", source=repo) from exc
    except RepositoryNotFoundError as exc:
        raise BackendError("gguf_not_found", repo=repo, file=filename) from exc
    except LocalEntryNotFoundError as exc:
        raise BackendError("gguf_offline", repo=repo, file=filename) from exc
    except EntryNotFoundError as exc:
        raise BackendError("gguf_not_found", repo=repo, file=filename) from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            raise BackendError("gated", source=repo) from exc
        raise BackendError("gguf_offline", repo=repo, file=filename) from exc
    except OSError as exc:  # no network at all
        raise BackendError("gguf_offline", repo=repo, file=filename) from exc


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
        import llama_cpp.mtmd_cpp  # the projector's bindings, built with the wheel
    except Exception as exc:  # not installed, or built without what it needs (a missing library)
        raise BackendError("gguf_no_llama_cpp", reason=f"{type(exc).__name__}: {exc}") from exc
    return llama_cpp


def quiet_mtmd() -> None:
    """mtmd logs to stderr (`add_text:`, `clip_encode:`…) whatever the Llama's `verbose`: send it through
    llama-cpp-python's logger, which shows only errors."""
    import llama_cpp.mtmd_cpp as mtmd
    from llama_cpp._logger import llama_log_callback

    mtmd.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))


def probe_png() -> bytes:
    """A tiny picture, to ask the projector how many positions a picture takes (Gemma 3 resizes every
    picture to one size, so it is the same for all)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def load_gguf(settings: Settings, progress: Progress | None = None) -> GGUFHandle:
    """Load the configured GGUF (and its mmproj). Raises `BackendError` with an instruction."""
    progress = progress or (lambda _phase: None)
    started = time.perf_counter()
    llama_cpp = _import_llama_cpp()
    files = resolve_files(settings, progress)
    gpu = settings.device != "cpu" and bool(llama_cpp.llama_supports_gpu_offload())
    threads = thread_count(settings.gguf_threads)
    device = "gpu" if gpu else "cpu"
    progress(Text("model.phase.load_gguf", {"file": files.model.name, "device": device, "threads": threads}))
    n_ctx = settings.context_tokens or DEFAULT_CONTEXT_CAP
    try:
        llm = llama_cpp.Llama(
            model_path=str(files.model),
            n_ctx=n_ctx,
            n_batch=BATCH,
            n_ubatch=BATCH,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=-1 if gpu else 0,
            swa_full=True,  # Gemma 3's sliding-window layers keep every position: a prefix can be cut anywhere
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise BackendError("unknown", source=files.source, reason=f"{type(exc).__name__}: {exc}") from exc
    handle: GGUFHandle | None = None
    try:
        architecture = llm.metadata.get("general.architecture", "?")
        if architecture != "gemma3":
            raise BackendError("not_gemma3", source=files.source, model_type=architecture)
        ctx, image_tokens, notice = None, 0, Text("model.notice.gguf_text_only")
        if files.mmproj is not None:
            ctx, image_tokens = _projector(llm, files, threads, gpu)
            notice = None
        n_train = llama_cpp.llama_model_n_ctx_train(llm.model)
        description = _describe(llama_cpp, llm)
        mmproj_bytes = files.mmproj.stat().st_size if files.mmproj is not None else 0
        handle = GGUFHandle(
            llm=llm,
            mtmd=ctx,
            files=files,
            gpu=gpu,
            threads=threads,
            context_limit=min(llm.n_ctx(), n_train) if n_train > 0 else llm.n_ctx(),
            image_tokens=image_tokens,
            kind=description,
            footprint_bytes=int(llama_cpp.llama_model_size(llm.model)) + mmproj_bytes,
            load_seconds=time.perf_counter() - started,
            identity={
                "model": file_identity(files.model),
                "mmproj": file_identity(files.mmproj) if files.mmproj is not None else "",
                "llama_cpp": llama_cpp.__version__,
                "gpu": str(gpu),
            },
            notice=notice,
        )
    finally:
        if handle is None:
            llm.close()
    atexit.register(handle.close)
    return handle


def _describe(llama_cpp: Any, llm: Any) -> str:
    """The weights' type as llama.cpp names it ("gemma3 4B Q4_K - Medium" → "Q4_K - Medium")."""
    buffer = ctypes.create_string_buffer(256)
    llama_cpp.llama_model_desc(llm.model, buffer, len(buffer))
    parts = buffer.value.decode("utf-8", "replace").split(" ", 2)
    return parts[2] if len(parts) == 3 else buffer.value.decode("utf-8", "replace")


def _projector(llm: Any, files: GGUFFiles, threads: int, gpu: bool) -> tuple[Any, int]:
    """The mtmd context for the mmproj (freed with the Llama), and the positions one picture takes."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    from core.model.backends.gguf.prompt import image_chunks

    quiet_mtmd()
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings, params.warmup = gpu, threads, False, False
    ctx = mtmd.mtmd_init_from_file(str(files.mmproj).encode(), llm.model, params)
    if not ctx:
        raise BackendError("unknown", source=str(files.mmproj), reason="llama.cpp could not load this mmproj file")
    llm._stack.callback(mtmd.mtmd_free, ctx)  # freed before the model, which it refers to
    if not mtmd.mtmd_support_vision(ctx):
        raise BackendError("unknown", source=str(files.mmproj), reason="this mmproj file has no vision encoder")
    with image_chunks(ctx, probe_png(), "probe") as (_chunks, chunk):
        image_tokens = int(mtmd.mtmd_input_chunk_get_n_pos(chunk))
    if image_tokens > min(llm.n_batch, llama_cpp.llama_n_ubatch(llm.ctx)):
        raise BackendError("unknown", source=str(files.mmproj), reason=f"a picture takes {image_tokens} positions, "
                           f"more than one batch ({llm.n_batch}): set REFSHEET_CONTEXT_TOKENS higher")  # fmt: skip
    return ctx, image_tokens
