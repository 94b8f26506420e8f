"""The engine, SQLite's pragmas, sessions and migrations.

SQLite gets WAL (readers never wait for the writer), foreign keys (so cascades happen in the
database), a busy timeout, and `BEGIN IMMEDIATE` for every transaction: a writer takes the write
lock when it starts instead of failing half-way when another thread got there first.
Any other SQLAlchemy URL (PostgreSQL, say) is used as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, create_engine

from storage.tables import utcnow

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
Row = TypeVar("Row")
BUSY_TIMEOUT_MS = 30_000


SQLITE_HEADER = b"SQLite format 3\x00"


class DatabaseProblem(Exception):
    """The configured database cannot be used as it is. `code`: not_sqlite, damaged, foreign (another
    program's tables), newer (made by a later version of the app), unreachable; `where`: the file or
    the URL without its password. Found before anything is written, so the database is left as it was."""

    def __init__(self, code: str, where: str, detail: str = "") -> None:
        self.code, self.where, self.detail = code, where, detail
        super().__init__(f"{code}: {where} {detail}".strip())


def check_database(url: str, known_revisions: set[str]) -> None:
    """Raise `DatabaseProblem` for a database this app must not touch; an empty or new one is fine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_file(parsed.database or "", known_revisions)
        return
    where = parsed.render_as_string(hide_password=True)
    probe = create_engine(url, pool_pre_ping=True)
    try:
        with probe.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = _revision(conn) if "alembic_version" in tables else None
    except DatabaseProblem:
        raise
    except Exception as exc:  # unreachable, refused, a wrong password: all said the same way
        raise DatabaseProblem("unreachable", where, f"{type(exc).__name__}: {exc}"[:300]) from exc
    finally:
        probe.dispose()
    _check_schema(tables, revision, known_revisions, where)


def _check_sqlite_file(database: str, known_revisions: set[str]) -> None:
    if not database or database == ":memory:":
        return
    path = Path(database).expanduser()
    if not path.exists() or path.stat().st_size == 0:
        return  # a new database: ours to create
    with path.open("rb") as fh:
        if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise DatabaseProblem("not_sqlite", str(path))
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)  # read-only: nothing changes
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = None
            if "alembic_version" in tables:
                revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = revision[0] if revision else None
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseProblem("damaged", str(path), str(exc)) from exc
    _check_schema(tables, revision, known_revisions, str(path))


def _revision(conn: Any) -> str | None:
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def _check_schema(tables: set[str], revision: str | None, known: set[str], where: str) -> None:
    ours = {"character", "conversation", "message"}
    if not tables:
        return
    if "alembic_version" not in tables or not (tables & ours):
        raise DatabaseProblem("foreign", where, ", ".join(sorted(tables))[:200])
    if revision is not None and revision not in known:
        raise DatabaseProblem("newer", where, revision)


def known_revisions() -> set[str]:
    """Every schema revision this version of the app knows."""
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}


def make_engine(url: str) -> Engine:
    """Create an engine for `url`, creating the SQLite file's folder if needed.

    Call it once per process (the app caches it with `st.cache_resource`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The engine itself, never its URL: a password or a socket path holds `%`, which Alembic's
    # ConfigParser would read as interpolation (and then print, password and all).
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the app does this at start-up, tests too), one process at a
    time: replicas starting together on an empty database would otherwise both create the tables,
    and the second fail half-way. The first migrates; the others wait, then find nothing to do."""
    with migration_lock(engine):
        command.upgrade(alembic_config(engine), revision)


def redacted(text: str, url: str) -> str:
    """`text` (an error message, say) without the URL's password, as it may appear in it."""
    password = make_url(url).password
    for form in {password, quote(password, safe="")} - {None, ""} if password else ():
        text = text.replace(form, "***")
    return text


def open_database(url: str) -> Engine:
    """The app's start-up path: refuse a database that is not ours (`DatabaseProblem`), then an
    engine on it, migrated to the newest schema. Safe to call from several processes at once."""
    check_database(url, known_revisions())
    engine = make_engine(url)
    try:
        migrate(engine)
    except Exception:
        engine.dispose()
        raise
    return engine


def schema_state(engine: Engine) -> str:
    """What a readiness probe needs to know: `ready` (reachable, at this version's newest schema),
    `not_migrated` (empty, or an older schema), `newer` (a later version of the app migrated it),
    or `unreachable`."""
    try:
        with engine.connect() as conn:
            revision = _revision(conn) if inspect(conn).has_table("alembic_version") else None
    except Exception:  # noqa: BLE001 - down, refused, a wrong password: all "cannot serve"
        return "unreachable"
    if revision == head_revision():
        return "ready"
    return "newer" if revision is not None and revision not in known_revisions() else "not_migrated"


@cache
def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


MIGRATION_LOCK_KEY = 0x5265_6653  # "RefS": PostgreSQL's advisory lock for this app's migrations


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Held by one process at a time while the schema changes: PostgreSQL's advisory lock (held by
    a connection of its own, released if the process dies), or a lock file beside a SQLite database.
    Other databases rely on their own DDL locking."""
    parsed = engine.url
    if parsed.get_backend_name() == "postgresql":
        with engine.connect() as holder:
            holder.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            try:
                yield
            finally:
                holder.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
                holder.commit()
        return
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        from filelock import FileLock

        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.migrating", timeout=BUSY_TIMEOUT_MS / 1000 * 10):
            yield
        return
    yield


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class StorageFull(Exception):
    """The disk (or the database server's) has no room for a write; the write was rolled back whole."""


_FULL = ("database or disk is full", "no space left on device", "disk full", "could not extend file")


def _is_full(exc: BaseException) -> bool:
    return (
        any(words in str(exc).lower() for words in _FULL)
        or getattr(getattr(exc, "orig", None), "sqlstate", "") == "53100"
    )


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error, so nothing is half-stored.
    A write that finds the disk full raises `StorageFull` (after the rollback)."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException as exc:
            session.rollback()
            if isinstance(exc, OperationalError) and _is_full(exc):
                raise StorageFull(str(exc.orig)) from exc
            raise


def require(session: Session, table: type[Row], row_id: int, gone: Exception, lock: bool = False) -> Row:
    """The row, or raise `gone`: another tab may have deleted it since this page was drawn.

    `lock` holds the row (`SELECT … FOR UPDATE`) until the transaction ends, so writers that derive
    a value from its children take turns; SQLite needs no lock (BEGIN IMMEDIATE already serialises)."""
    row = session.get(table, row_id, with_for_update=True if lock else None)
    if row is None:
        raise gone
    return row


def touch(session: Session, table: type[Any], row_id: int) -> None:
    """Mark a row as just used (lists sort by `updated_at`)."""
    row = session.get(table, row_id)
    if row is not None:
        row.updated_at = utcnow()
        session.add(row)
