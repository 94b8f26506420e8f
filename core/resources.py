"""The Streamlit cached resources: the only place that holds process-wide objects.

One database engine per URL and one model slot per model configuration, shared by every browser
session of this server process. The slot loads nothing until a reply is needed. Pages call these;
the rest of `core/` and `storage/` never imports Streamlit.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.engine import Engine

from core.generation import ChatEngine
from core.kvcache import MB, KVStore, default_limit_mb
from core.model import ModelHandle, ModelSlot
from core.settings import Settings, load_settings
from storage.db import make_engine, migrate


def settings() -> Settings:
    """Read on every run (cheap) so a changed environment or secrets file takes effect."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def engine_for(database_url: str) -> Engine:
    """The engine for `database_url`, migrated to the newest schema: created once per process."""
    engine = make_engine(database_url)
    migrate(engine)
    return engine


def engine() -> Engine:
    return engine_for(settings().database_url)


@st.cache_resource(show_spinner=False)
def _slot(
    model_id: str,
    quantization: str,
    device: str,
    dtype: str,
    context_tokens: int,
    kv_cache_mb: int,
    _settings: Settings,
) -> ModelSlot:
    """One slot per model configuration; the arguments are the cache key."""

    def make_engine(handle: ModelHandle) -> ChatEngine:
        limit_mb = kv_cache_mb or default_limit_mb(handle.device)
        return ChatEngine(handle, KVStore(limit_mb * MB))

    return ModelSlot(_settings, make_engine)


def model_slot() -> ModelSlot:
    """The model slot for the current settings (one per distinct model configuration)."""
    s = settings()
    return _slot(s.model_id, s.quantization, s.device, s.dtype, s.context_tokens, s.kv_cache_mb, s)
