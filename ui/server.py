"""The server around the pages (`app` in `Home.py`): the database migrated once at start-up, a
readiness check a load balancer can probe, and what a person sees when something unexpected fails.

`streamlit run Home.py` finds the `st.App` there and serves it; each page view then runs `Home.py`
as its script. None of this runs under Streamlit's AppTest, which runs the script alone: the error
page is reached from the router too (`ui.navigation.route`)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import streamlit as st
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.base.settings import load_settings
from storage.db import DatabaseProblem, make_engine, open_database, redacted, schema_state
from ui.language import tr

log = logging.getLogger("refsheet.server")
T = TypeVar("T")
READY_PATH = "/ready"


RETRY_SECONDS = 5.0


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    """Migrate before the first page view needs it, in the background: the server answers at once
    (`/_stcore/health` says the process is up) while `/ready` says whether the database can serve.
    Under the migration lock, so replicas may start together; retried until it works, so a replica
    that started before its database becomes ready when the database comes up."""
    threading.Thread(target=_prepare, name="refsheet-start-up", daemon=True).start()
    yield


def _prepare() -> None:
    said = ""
    while True:
        url = load_settings().database_url
        try:
            open_database(url).dispose()
            return
        except DatabaseProblem as problem:  # not ours, damaged, newer: nothing a retry changes
            log.error("The database cannot be used (%s): %s %s", problem.code, problem.where,
                      redacted(problem.detail, url))  # fmt: skip
            return
        except Exception as exc:  # noqa: BLE001 - unreachable now, fine later perhaps: retried, said once
            reason = redacted(f"{type(exc).__name__}: {exc}", url)[:500]
            if reason != said:
                log.warning("The database is not ready yet (retrying every %.0f s): %s", RETRY_SECONDS, reason)
                said = reason
        time.sleep(RETRY_SECONDS)


_probes: dict[str, Engine] = {}


def readiness() -> tuple[bool, str]:
    """Whether this replica can serve: its database answers and has this version's schema.
    The reason is a word, never the URL or a message that could hold a password."""
    url = load_settings().database_url
    engine = _probes.get(url) or _probes.setdefault(url, make_engine(url))
    state = schema_state(engine)
    return state == "ready", state


async def ready(_request: Request) -> JSONResponse:
    """`GET /ready`: 200 `{"ready": true}` when this replica can serve, 503 with the reason when not
    (`unreachable`, `not_migrated`, `newer`). Streamlit's own `/_stcore/health` only says the
    process is up."""
    ok, state = await asyncio.to_thread(readiness)
    return JSONResponse({"ready": ok, "state": state}, status_code=200 if ok else 503)


def routes() -> list[Route]:
    """`/ready`, and under the base path too when the app is served below one (`server.baseUrlPath`)."""
    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    paths = [READY_PATH] + ([f"/{base}{READY_PATH}"] if base else [])
    return [Route(path, ready, methods=["GET", "HEAD"]) for path in paths]


def on_script_error(exc: BaseException) -> bool:
    """Any error a page or a button did not expect: one translated message with an error id, the
    traceback in the server's log under that id (Streamlit's own display, with file paths, is off)."""
    unexpected(exc)
    return True


def unexpected(exc: BaseException) -> None:
    st.error(tr("app.unexpected", id=_logged(exc)), icon=":material/error:")


def _logged(exc: BaseException) -> str:
    """Log an unexpected error's traceback under a new error id, and return the id."""
    error_id = secrets.token_hex(4)
    log.error("Unexpected error %s", error_id, exc_info=(type(exc), exc, exc.__traceback__))
    return error_id


def logged(build: Callable[[], T]) -> Callable[[], T]:
    """A download's builder (run when the button is clicked) whose failure is logged under an error id;
    the button itself says the file could not be made."""

    def run() -> T:
        try:
            return build()
        except Exception as exc:
            _logged(exc)
            raise

    return run
