"""The engine, SQLite's pragmas, sessions and migrations.

SQLite gets WAL (readers never wait for the writer), foreign keys (so cascades happen in the
database), a busy timeout, and `BEGIN IMMEDIATE` for every transaction: a writer takes the write
lock when it starts instead of failing half-way when another thread got there first.
Any other SQLAlchemy URL (PostgreSQL, say) is used as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from storage.tables import utcnow

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
Row = TypeVar("Row")
BUSY_TIMEOUT_MS = 30_000


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
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (the app does this at start-up, tests too)."""
    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on any error, so nothing is half-stored."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
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
