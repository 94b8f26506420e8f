"""Shared fixtures: real SQLite files, real images, the shared test data."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.engine import Engine

from storage.db import make_engine, migrate

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REFSHEET_SHARED_DIR", ROOT.parent / "shared"))


@pytest.fixture(autouse=True)
def _run_from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest and the secrets file are resolved relative to the repository root."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared test data not found at {SHARED} (set REFSHEET_SHARED_DIR)")
    return SHARED


@pytest.fixture
def neutral_png(shared: Path) -> bytes:
    return (shared / "images" / "seraphina_neutral.png").read_bytes()


@pytest.fixture
def joy_png(shared: Path) -> bytes:
    return (shared / "images" / "seraphina_joy.png").read_bytes()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'refsheet.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()
