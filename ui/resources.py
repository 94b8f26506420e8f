"""The Streamlit cached resources: the only place that holds process-wide objects.

One database engine per URL and one backend per model configuration, shared by every browser
session of this server process. The backend loads nothing until a reply is needed.
"""

from __future__ import annotations

import contextlib
import threading

import streamlit as st
from sqlalchemy.engine import Engine

from core.base.settings import Settings, load_settings
from core.base.sheets import ImageLimits
from core.model.backend import Backend, BackendError
from core.model.registry import make_backend
from core.services.users import Actor
from storage.db import DatabaseProblem, open_database
from ui.language import tr


def settings() -> Settings:
    """Read on every run (cheap) so a changed environment or secrets file takes effect."""
    return load_settings()


@st.cache_resource(show_spinner=False)
def _engine_for(database_url: str) -> Engine:
    """The engine for `database_url`, migrated to the newest schema: created once per process.
    A database that is not this app's, or is damaged, is refused before anything touches it."""
    return open_database(database_url)


def db() -> Engine:
    """The database; if it cannot be used, the page says which and what to do, and goes no further."""
    try:
        return _engine_for(settings().database_url)
    except DatabaseProblem as problem:
        st.error(tr(f"database.{problem.code}", where=problem.where, detail=problem.detail),
                 icon=":material/database:")  # fmt: skip
        st.stop()


@st.cache_resource(show_spinner=False)
def _backend_for(_settings: Settings, key: tuple[object, ...]) -> Backend:
    """One backend per model configuration (`key`); the settings object itself is not hashed.
    With REFSHEET_PRELOAD the model starts loading now, in the background, instead of at the first
    reply: Streamlit runs no app code before the first page view, so that is when this happens."""
    backend = make_backend(_settings)
    if _settings.preload:
        threading.Thread(target=_preload, args=(backend,), name="refsheet-preload", daemon=True).start()
    return backend


def _preload(backend: Backend) -> None:
    with contextlib.suppress(BackendError):  # the status says what went wrong, and a reply retries
        backend.prepare()


def backend() -> Backend:
    """The backend for the current settings (one per distinct model configuration)."""
    s = settings()
    return _backend_for(s, s.backend_key())  # the API key only as a hash: a changed key, never the key


def actor() -> Actor:
    """Who is using this browser session: the local user without sign-in, else the signed-in person.

    Only ever an actor: a visitor who is not (or may not be) signed in is stopped here, whatever page
    was asked for (the router shows them the sign-in page instead). Their persona is read fresh, so
    a change in one tab holds in the next reply of every other, and a Sign out elsewhere ends this
    session at its next run."""
    from ui.auth import signed_in_actor

    current = signed_in_actor(db(), settings())
    if not isinstance(current, Actor):
        st.stop()
    return current


def limits() -> ImageLimits:
    s = settings()
    return ImageLimits(s.max_upload_bytes, s.max_pixels, s.max_image_side, s.thumbnail_side)
