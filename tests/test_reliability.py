"""Reliability: a database the app must not touch, a full disk, hostile names. Through the real app."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import new_app

pytestmark = pytest.mark.slow


def _fingerprint(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"name,colour\nSeraphina,pink\n" * 50)


def _damaged(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE recipes (id INTEGER PRIMARY KEY, title TEXT)")
        conn.execute("INSERT INTO recipes (title) VALUES ('Soup')")


def _newer(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        for table in ("character", "conversation", "message"):
            conn.execute(f'CREATE TABLE "{table}" (id INTEGER PRIMARY KEY)')
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999')")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_not_sqlite, "is not a SQLite database"),
        (_damaged, "is damaged and cannot be read"),
        (_foreign, "belongs to another program (it holds tables such as recipes)"),
        (_newer, "was made by a newer version of RefSheet Chat (schema 9999)"),
    ],
)
def test_a_database_that_is_not_ours_is_named_and_left_untouched(app_env: Path, make, words: str) -> None:
    app_env.mkdir(parents=True, exist_ok=True)
    database = app_env / "refsheet.db"
    make(database)
    before = _fingerprint(app_env)
    for page in (None, "pages/library.py"):
        at = new_app(page) if page is None else new_app()
        if page:
            at.switch_page(page).run()
        assert not at.exception
        (error,) = [e.value for e in at.error]
        assert words in error and str(database) in error
    assert _fingerprint(app_env) == before  # not a byte changed, no journal files left behind


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MB tmpfs for the data directory (the tests run as root; skipped where mounting is refused)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount rights): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the disk refuses another byte."""
    filler = folder / "filler.bin"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_said_and_loses_nothing(small_disk: Path, tiny_checkpoint: Path, neutral_png: bytes,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from core.base.sheets import prepare_image
    from core.services import characters
    from core.services.users import LOCAL_USER
    from storage.db import make_engine, migrate
    from tests.test_app import chat_texts

    data = small_disk / "data"
    monkeypatch.setenv("REFSHEET_DATA_DIR", str(data))
    monkeypatch.setenv("REFSHEET_MODEL", str(tiny_checkpoint))
    monkeypatch.setenv("REFSHEET_QUANTIZATION", "none")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    engine = make_engine(f"sqlite:///{data / 'refsheet.db'}")
    migrate(engine)
    made = characters.create(engine, LOCAL_USER, {"name": "Sera", "first_mes": "Hello."}, [prepare_image(neutral_png)])
    at = new_app("pages/chat.py", character=made.id)
    at.chat_input[0].set_value("First question").run()
    before = chat_texts(at)
    assert [r for r, _ in before] == ["assistant", "user", "assistant"]

    filler = _fill(small_disk)  # the disk fills up mid-conversation
    at.chat_input[0].set_value("Second question").run()
    assert not at.exception
    shown = " ".join(e.value for e in [*at.error, *at.warning])
    assert "disk that holds RefSheet Chat's data is full" in shown and "back in the box" in shown
    assert at.chat_input[0].value == "Second question"  # kept, not lost: in the box, to send again
    assert chat_texts(at) == before

    filler.unlink()  # space returns
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    at.chat_input[0].set_value("Second question").run()
    assert [t for _, t in chat_texts(at)][:4] == [t for _, t in before] + ["Second question"]
    engine.dispose()
