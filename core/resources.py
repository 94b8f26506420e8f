"""The Streamlit cached resources: the only place that holds process-wide objects.

One database engine per URL and one model slot per model configuration, shared by every browser
session of this server process. Pages call these; `core/` and `storage/` never import Streamlit.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy.engine import Engine

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
