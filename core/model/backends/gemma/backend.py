"""The in-process Gemma 3 backend: one model per process, loaded on first use, shared by every session.

It owns what is specific to running the model here through transformers (the KV store, the engine)
behind the neutral `core.model.backend.Backend` protocol; loading with phases, the failure, warm-ups
are the shell both in-process backends share (`core.model.backends.inprocess`). Pages read
`status()` freely; only `prepare()` or a reply loads the model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.base.i18n import Text
from core.base.settings import Settings
from core.model.backend import BackendStatus
from core.model.backends.gemma.engine import ChatEngine, new_cache
from core.model.backends.gemma.kvcache import MB, KVStore, default_limit_mb
from core.model.backends.gemma.model import ModelHandle, ModelLoadError, load_model
from core.model.backends.gemma.prefix_disk import PrefixDisk
from core.model.backends.inprocess import InProcessBackend, size_text

ENGINE = "transformers"


def describe(handle: ModelHandle) -> str:
    """One line a person can read: "gemma-3-4b-it (transformers) · 4bit · cuda · bfloat16 · 3.1 GB"."""
    name = Path(handle.source).name or handle.source
    dtype = str(handle.dtype).removeprefix("torch.")
    return (
        f"{name} ({ENGINE}) · {handle.quantization} · {handle.device} · {dtype} · {size_text(handle.footprint_bytes)}"
    )


class GemmaBackend(InProcessBackend):
    """The one model of this process. `engine_factory` turns the loaded handle into a `ChatEngine`
    (by default with a KV store sized by the settings); `loader` is `load_model` unless a test says."""

    load_error = ModelLoadError

    def __init__(
        self,
        settings: Settings,
        engine_factory: Callable[[ModelHandle], ChatEngine] | None = None,
        loader: Callable[..., ModelHandle] = load_model,
    ) -> None:
        super().__init__(settings, engine_factory or self._engine_with_cache, loader)

    def _engine_with_cache(self, handle: ModelHandle) -> ChatEngine:
        limit_mb = self.settings.kv_cache_mb or default_limit_mb(handle.device)
        disk = None
        if self.settings.prefix_cache_mb > 0:  # character prefixes outlive the process
            folder = self.settings.data_dir / "prefix-cache"
            disk = PrefixDisk(folder, self.settings.prefix_cache_mb * MB, handle.identity, lambda: new_cache(handle))
        return ChatEngine(handle, KVStore(limit_mb * MB, disk, str(handle.model.device)))

    def idle_description(self) -> str:
        return f"{self.settings.model_id} ({ENGINE})"

    def ready_status(self, engine: ChatEngine) -> BackendStatus:
        report = engine.cache_report()
        details = (Text("model.cache", report),) if report else ()
        return BackendStatus("ready", describe(engine.handle), notice=engine.handle.notice, details=details)

    def flush(self, engine: ChatEngine) -> None:
        if engine.kv is not None:
            engine.kv.flush()
