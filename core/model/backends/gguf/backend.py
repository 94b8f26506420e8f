"""The llama.cpp backend (`REFSHEET_BACKEND=gguf`): a Gemma 3 GGUF and its mmproj in this process.

One model per process, loaded on first use and shared by every session, like the transformers backend
(the shell is `core.model.backends.inprocess`); what differs is the engine: llama.cpp's 4-bit kernels
(Metal or CUDA where the wheel has them), and character prefixes kept on disk as llama.cpp KV states.
Importing this package imports neither torch nor transformers.
"""

from __future__ import annotations

from collections.abc import Callable

from core.base.i18n import Text
from core.base.settings import Settings
from core.model.backend import BackendStatus
from core.model.backends.gguf.engine import MB, GGUFEngine
from core.model.backends.gguf.model import ENGINE, GGUFHandle, load_gguf
from core.model.backends.gguf.states import StateDisk, States
from core.model.backends.inprocess import InProcessBackend, size_text

DEFAULT_KV_MB = 1024  # conversations set aside and prefixes kept in memory, as the transformers backend on a CPU


def describe(handle: GGUFHandle) -> str:
    """One line a person can read: "gemma-3-4b-it-Q4_K_M.gguf (llama.cpp) · Q4_K - Medium · cpu · 8 threads ·
    3.3 GB"."""
    where = "gpu" if handle.gpu else f"cpu · {handle.threads} threads"
    return f"{handle.files.model.name} ({ENGINE}) · {handle.kind} · {where} · {size_text(handle.footprint_bytes)}"


class GGUFBackend(InProcessBackend):
    """The one GGUF of this process. `loader` is `load_gguf` unless a test says."""

    def __init__(self, settings: Settings, loader: Callable[..., GGUFHandle] = load_gguf) -> None:
        super().__init__(settings, self._engine_for, loader)

    def _engine_for(self, handle: GGUFHandle) -> GGUFEngine:
        disk = None
        if self.settings.prefix_cache_mb > 0:  # character prefixes outlive the process
            folder = self.settings.data_dir / "prefix-cache" / "gguf"
            disk = StateDisk(folder, self.settings.prefix_cache_mb * MB, handle.identity)
        return GGUFEngine(handle, States((self.settings.kv_cache_mb or DEFAULT_KV_MB) * MB), disk)

    @property
    def source(self) -> str:
        s = self.settings
        return s.gguf_model or f"{s.gguf_repo}: {s.gguf_file}"

    def idle_description(self) -> str:
        return f"{self.source} ({ENGINE})"

    def ready_status(self, engine: GGUFEngine) -> BackendStatus:
        details = (Text("model.cache", engine.cache_report()),)
        return BackendStatus("ready", describe(engine.handle), notice=engine.handle.notice, details=details)

    def flush(self, engine: GGUFEngine) -> None:
        engine.flush()

    def close(self) -> None:
        """Free the model now (tests; otherwise it lives as long as the process)."""
        if self._engine is not None:
            self.flush(self._engine)
            self._engine.handle.close()
