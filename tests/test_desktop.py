"""The desktop app: the window (pywebview, GTK/WebKit) under Xvfb, its server's life, and the one-folder build.

- The settings a desktop start gives the server, the first-run form's checks, the desktop's wording of
  errors, the logs' rotation, one window per data folder, `--version`, the menu entry (no GUI needed).
- `python -m desktop`, started from another folder with only HOME/XDG folders set and the tiny GGUF
  model (the default desktop engine, llama.cpp): the window opens with the Home page (its heading read
  from the page, the screenshot not blank, its icon set), data and logs in the per-user folder; closing
  it (WM_DELETE_WINDOW, as a window manager's × sends it) stops the server and frees its port; kill -9 of
  the window's process leaves no server either; kill -9 of the server is noticed, said in the window's
  own words and repaired; a second launch hands over to the first window and exits; "Choose the
  model…"'s Cancel leaves the server alone; Ctrl+Q quits. On a 1366×768 screen the first-run form's
  Start button is inside the window, and pressing it there starts the app.
- The built folder (`python -m desktop.build --cache`, marked `bundle`): torch-free and lean (no test
  code, no absolute build path, under a fifth of the 1.3 GB torch build), launched from another folder,
  every page opens, and a message sent through its server gets a streamed reply from the tiny GGUF
  model, saved in the per-user data folder.

The GUI tests need Xvfb, xdotool, xprop and an interpreter with requirements-desktop.txt installed
(PyGObject compiles against Debian's WebKitGTK headers, so it is not part of requirements-dev.txt and the
README's test command works on any machine): REFSHEET_DESKTOP_PYTHON, else this one. Without them they
are skipped, unless REFSHEET_REQUIRE_DESKTOP is set (CI sets both: its own venv, as for llama-cpp-python).
The tiny GGUF model and its mmproj are made by tests/test_gguf.py's fixtures (llama.cpp's converter).
"""

# ruff: noqa: F811
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

try:
    import platformdirs  # noqa: F401 - the desktop's requirements are installed
except ImportError:
    if os.environ.get("REFSHEET_REQUIRE_DESKTOP"):
        pytest.fail("the desktop tests need: pip install -r requirements-desktop.txt", pytrace=False)
    pytest.skip("needs pip install -r requirements-desktop.txt", allow_module_level=True)

# The tiny GGUF model's fixtures, shared with tests/test_gguf.py (hence F811: test arguments take their names).
from tests.test_gguf import converter, tiny_gguf  # noqa: F401

pytestmark = pytest.mark.desktop
PYTHON = os.environ.get("REFSHEET_DESKTOP_PYTHON") or sys.executable  # runs the window and the build
SHOTS = ROOT / "test-artifacts" / "screenshots"
RESULTS = ROOT / "test-artifacts" / "desktop.json"
TORCH_BUILD_BYTES = 1_321_287_546  # the one-folder build with torch before this issue (the CI cache's record)
ROSE = (194, 65, 122)  # the Start button's colour, #c2417a


# -- Settings (no GUI) -------------------------------------------------------------------------------
def test_the_server_gets_per_user_data_and_the_saved_choice_unless_the_environment_says(tmp_path: Path) -> None:
    from desktop.config import Choice, needs_first_run, save_choice, server_environment

    env = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data-home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config-home")}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("REFSHEET_DATA_DIR", "REFSHEET_MODEL", "REFSHEET_BACKEND", "REFSHEET_API_BASE", "HF_TOKEN",
                    "REFSHEET_GGUF_MODEL", "REFSHEET_GGUF_MMPROJ", "REFSHEET_GGUF_REPO"):  # fmt: skip
            mp.delenv(key, raising=False)
        mp.setattr("desktop.config._secrets_files_settings", dict)  # this machine's secrets files aside
        assert needs_first_run()
        server = server_environment(cwd=tmp_path)
        assert server["REFSHEET_DATA_DIR"] == str(tmp_path / "data-home" / "RefSheetChat")
        assert server["REFSHEET_PRELOAD"] == "1"

        saved = save_choice(Choice(backend="local", model="google/gemma-3-4b-it"), {"HF_TOKEN": "hf_secret"})
        assert saved.parent == tmp_path / "config-home" / "RefSheetChat"
        secrets = saved.with_name("secrets.toml")
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
        assert "hf_secret" not in saved.read_text()
        assert not needs_first_run()
        server = server_environment(cwd=tmp_path)
        assert (server["REFSHEET_MODEL"], server["HF_TOKEN"]) == ("google/gemma-3-4b-it", "hf_secret")

        save_choice(Choice(backend="gguf", gguf_model="/m/g.gguf", gguf_mmproj="/m/mmproj.gguf"), {})
        server = server_environment(cwd=tmp_path)
        assert (server["REFSHEET_BACKEND"], server["REFSHEET_GGUF_MODEL"], server["REFSHEET_GGUF_MMPROJ"]) == (
            "gguf", "/m/g.gguf", "/m/mmproj.gguf")  # fmt: skip
        save_choice(Choice(backend="gguf", gguf_repo="o/r", gguf_file="m.gguf", gguf_mmproj_file="p.gguf"), {})
        server = server_environment(cwd=tmp_path)
        assert (server["REFSHEET_GGUF_REPO"], server["REFSHEET_GGUF_FILE"], server["REFSHEET_GGUF_MMPROJ_FILE"]) == (
            "o/r", "m.gguf", "p.gguf")  # fmt: skip

        (tmp_path / "models" / "mine").mkdir(parents=True)
        mp.setenv("REFSHEET_MODEL", "models/mine")  # the environment wins; a relative folder is made absolute
        mp.setenv("REFSHEET_DATA_DIR", "here")
        server = server_environment(cwd=tmp_path)
        assert server["REFSHEET_MODEL"] == str(tmp_path / "models" / "mine")
        assert server["REFSHEET_DATA_DIR"] == str(Path("here").resolve())


def test_the_first_run_form_says_what_to_fix(tmp_path: Path) -> None:
    from desktop.firstrun import check

    (tmp_path / "empty").mkdir()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    alone, pair = tmp_path / "alone", tmp_path / "pair"
    alone.mkdir()
    pair.mkdir()
    (alone / "g.gguf").write_bytes(b"GGUF" + bytes(60))
    (pair / "gemma-3-4b-it-Q4_K_M.gguf").write_bytes(b"GGUF" + bytes(60))
    (pair / "mmproj-model-f16.gguf").write_bytes(b"GGUF" + bytes(60))
    (tmp_path / "not.gguf").write_bytes(b"PK\x03\x04")
    for form, words in [
        ({"way": "folder", "folder": str(tmp_path / "nowhere")}, "does not exist"),
        ({"way": "folder", "folder": str(tmp_path / "empty")}, "has no config.json"),
        ({"way": "hub", "hub_id": "gemma"}, "owner/name"),
        ({"way": "server", "api_base": "localhost:11434", "api_model": "gemma3:4b"}, "http://"),
        ({"way": "server", "api_base": "http://localhost:11434/v1", "api_model": ""}, "Name the model"),
        ({"way": "gguf_files", "gguf_model": ""}, r"Choose the model's \.gguf file"),
        ({"way": "gguf_files", "gguf_model": str(tmp_path / "nowhere.gguf")}, "does not exist"),
        ({"way": "gguf_files", "gguf_model": str(tmp_path / "not.gguf")}, "is not a GGUF file"),
        ({"way": "gguf_files", "gguf_model": str(alone / "g.gguf")}, "vision projector too"),
        ({"way": "gguf_hub", "gguf_repo": "gemma", "gguf_file": "a.gguf", "gguf_mmproj_file": "b.gguf"}, "owner/name"),
        ({"way": "gguf_hub", "gguf_repo": "o/r", "gguf_file": "a.bin", "gguf_mmproj_file": "b.gguf"}, "end in .gguf"),
        ({}, "Choose one"),
    ]:
        with pytest.raises(ValueError, match=words):
            check(form)
    with pytest.raises(ValueError, match="不存在"):  # the system's language is Chinese: so is the message
        check({"way": "folder", "folder": str(tmp_path / "nowhere")}, "zh")
    with pytest.raises(ValueError, match="no transformers engine"):  # the torch-free build
        check({"way": "folder", "folder": str(tmp_path / "model")}, available={"gguf": True, "local": False})
    choice, _ = check({"way": "folder", "folder": str(tmp_path / "model")}, available={"gguf": True, "local": True})
    assert choice.environment() == {"REFSHEET_BACKEND": "local", "REFSHEET_MODEL": str(tmp_path / "model")}
    choice, secrets = check({"way": "server", "api_base": "http://h:8000/v1", "api_model": "g", "api_key": "k"})
    assert choice.environment()["REFSHEET_API_BASE"] == "http://h:8000/v1" and secrets == {"REFSHEET_API_KEY": "k"}
    choice, _ = check({"way": "gguf_files", "gguf_model": str(pair / "gemma-3-4b-it-Q4_K_M.gguf")})
    assert choice.environment() == {"REFSHEET_BACKEND": "gguf",  # the projector found beside the model
                                    "REFSHEET_GGUF_MODEL": str(pair / "gemma-3-4b-it-Q4_K_M.gguf"),
                                    "REFSHEET_GGUF_MMPROJ": str(pair / "mmproj-model-f16.gguf")}  # fmt: skip
    hub = {"way": "gguf_hub", "gguf_repo": "ggml-org/gemma-3-4b-it-GGUF", "hf_token": "hf_x",
           "gguf_file": "gemma-3-4b-it-Q4_K_M.gguf", "gguf_mmproj_file": "mmproj-model-f16.gguf"}  # fmt: skip
    choice, secrets = check(hub)
    assert choice.environment()["REFSHEET_GGUF_REPO"] == hub["gguf_repo"] and secrets == {"HF_TOKEN": "hf_x"}


def test_the_first_run_screen_speaks_the_systems_language(monkeypatch: pytest.MonkeyPatch) -> None:
    from desktop import ui_language
    from desktop.firstrun import page

    monkeypatch.setattr("desktop.firstrun.saved_secrets", dict)  # this machine's saved choice aside
    monkeypatch.setattr("desktop.firstrun.saved_choice", lambda: None)
    english, chinese = page("en"), page("zh")
    assert "A model folder on this computer" in english and "这台电脑上的模型文件夹" in chinese
    assert "A GGUF model on this computer (llama.cpp)" in english and "GGUF 模型" in chinese
    assert "{{" not in english + chinese and "__" not in re.sub(r"<script>.*</script>", "", english, flags=re.S)
    assert '<html lang="zh-CN">' in chinese
    dialog = page("en", dialog=True)
    assert "<h1>Choose the model</h1>" in dialog and '"cancel": true' in dialog and '"cancel": false' in english
    for locale_name, expected in (("zh_CN.UTF-8", "zh"), ("en_GB.UTF-8", "en"), ("C.UTF-8", "en")):
        monkeypatch.delenv("LC_ALL", raising=False)
        monkeypatch.delenv("LC_MESSAGES", raising=False)
        monkeypatch.setenv("LANG", locale_name)
        assert ui_language() == expected


def test_the_server_is_loopback_only_and_not_in_development_mode() -> None:
    from desktop.server import streamlit_flags

    flags = streamlit_flags(8765)
    for expected in ("--server.address=127.0.0.1", "--server.headless=true", "--global.developmentMode=false",
                     "--browser.gatherUsageStats=false", "--browser.serverAddress=localhost"):  # fmt: skip
        assert expected in flags
    assert "--server.port=8765" in flags


def test_errors_speak_to_the_desktop_user_with_the_same_catalogue() -> None:
    """One catalogue, two audiences: the web app's errors name settings; the desktop's server names the
    menu's "Choose the model…" and the first-run fields, with no parameter the web wording lacks."""
    from core.base import i18n
    from core.base.i18n import _CATALOGS, set_audience, t
    from core.model.backend import BackendError

    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    variants = [key for key in _CATALOGS["en"] if key.endswith("@desktop")]
    assert len(variants) >= 15
    for key in variants:
        base = key.removesuffix("@desktop")
        for lang in ("en", "zh"):
            assert fields(_CATALOGS[lang][key][-1]) <= fields(_CATALOGS["en"][base][-1]), key
    problems = [("offline", {"source": "google/gemma-3-4b-it"}), ("gguf_offline", {"repo": "r", "file": "f"}),
                ("gated", {"source": "g"}), ("unreachable", {"base": "http://h/v1", "reason": "refused"}),
                ("unauthorized", {"base": "http://h/v1"}), ("not_installed", {"backend": "local",
                 "packages": "torch", "file": "requirements-local.txt"})]  # fmt: skip
    try:
        for code, params in problems:
            web = BackendError(code, **params).message("en")
            assert re.search(r"REFSHEET_|secrets\.toml|environment|pip install", web), web
            set_audience("desktop")
            desktop = BackendError(code, **params).message("en")
            assert "Choose the model…" in desktop and not re.search(r"REFSHEET_|secrets\.toml|environment", desktop)
            assert "选择模型…" in BackendError(code, **params).message("zh")
            set_audience("web")
        assert t("desktop.quit", "en") == "Quit"  # a key without a desktop wording reads as it is
        with pytest.raises(ValueError):
            set_audience("kiosk")
    finally:
        set_audience("web")
    assert i18n._audience == "web"


def test_logs_rotate_in_place_and_keep_a_few(tmp_path: Path) -> None:
    from desktop.system import rotate

    log = tmp_path / "server.log"
    with log.open("ab") as writer:  # as the server holds it: appending
        for round_ in range(5):
            writer.write(f"round {round_}\n".encode() * 100)
            writer.flush()
            assert rotate(log, max_bytes=500, backups=3)
        writer.write(b"after\n")
    assert log.read_bytes() == b"after\n"  # emptied in place: the writer went on at its start
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server.log", "server.log.1", "server.log.2", "server.log.3"]
    assert (tmp_path / "server.log.1").read_bytes().startswith(b"round 4")
    assert not rotate(log, max_bytes=500)


def test_one_window_per_data_folder_and_a_second_launch_hands_over(tmp_path: Path) -> None:
    from desktop.instance import Instance, tell_running

    first, second = Instance(tmp_path), Instance(tmp_path)
    asked = []
    (tmp_path / "window.tmp").write_text("left by a crash")
    (tmp_path / "window.tmp").chmod(0o644)  # readable by everyone: the key must not go into it
    assert first.claim()
    try:
        first.listen(lambda message: asked.append(message) or {"ok": True, "pid": os.getpid()})
        assert stat.S_IMODE((tmp_path / "window.json").stat().st_mode) == 0o600  # its key: this user only
        assert not second.claim()
        assert tell_running(tmp_path, {"do": "show"}) == {"ok": True, "pid": os.getpid()}
        assert asked == [{"do": "show"}]
        info = json.loads((tmp_path / "window.json").read_text())
        from multiprocessing.connection import AuthenticationError, Client

        with pytest.raises((AuthenticationError, EOFError, ConnectionError)):  # without the key: no hearing
            Client(("127.0.0.1", info["port"]), authkey=b"guess")
    finally:
        first.release()
    assert second.claim()  # free again once the first has gone
    second.release()
    assert tell_running(tmp_path, {"do": "show"}, timeout=1) is None


def test_version_and_the_menu_entry(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "desktop", "--version"], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    from desktop import VERSION

    assert done.stdout.strip() == f"RefSheet Chat {VERSION} (from the sources)"
    done = subprocess.run([sys.executable, "-m", "desktop", "--install-desktop-entry"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    entry = tmp_path / "data" / "applications" / "refsheetchat.desktop"
    icon = tmp_path / "data" / "icons" / "hicolor" / "256x256" / "apps" / "refsheetchat.png"
    assert done.stdout.split() == [str(entry), str(icon)]
    text = entry.read_text()
    assert "Name=RefSheet Chat" in text and "Icon=refsheetchat" in text and f"Exec={sys.executable} -m desktop" in text
    assert icon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    subprocess.run([sys.executable, "-m", "desktop", "--remove-desktop-entry"], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip
    assert not entry.exists() and not icon.exists()


# -- Under Xvfb ---------------------------------------------------------------------------------------
def _gui_problem() -> str | None:
    for tool in ("Xvfb", "xdotool", "xprop"):
        if not shutil.which(tool):
            return f"needs {tool} (apt-get install -y xvfb xdotool x11-utils)"
    probe = "import webview, gi; gi.require_version('WebKit2', '4.1'); from gi.repository import WebKit2"
    done = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"needs pywebview with GTK/WebKit2 4.1 (see requirements-desktop.txt): {done.stderr.strip()[-300:]}"
    return None


@contextlib.contextmanager
def xvfb(size: str) -> Iterator[str]:
    """A private X display (Xvfb picks a free number) of `size` ("1280x900")."""
    if problem := _gui_problem():
        if os.environ.get("REFSHEET_REQUIRE_DESKTOP"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{size}x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    assert number, "Xvfb did not start"
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    with xvfb("1280x900") as name:
        yield name


@pytest.fixture(scope="module")
def laptop_display() -> Iterator[str]:
    """A common laptop screen, 1366×768."""
    with xvfb("1366x768") as name:
        yield name


def desktop_env(tmp_path: Path, display: str, tiny_gguf: tuple[Path, Path, Path]) -> dict[str, str]:
    """A user's environment: HOME and the XDG folders in tmp_path, the tiny GGUF model, no data folder set."""
    _folder, model, mmproj = tiny_gguf
    drop = ("REFSHEET_DATA_DIR", "DATABASE_URL", "PYTHONPATH", "REFSHEET_MODEL", "REFSHEET_BACKEND")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({
        "DISPLAY": display,
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "home" / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "home" / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "home" / "cache"),
        "REFSHEET_GGUF_MODEL": str(model),
        "REFSHEET_GGUF_MMPROJ": str(mmproj),
        "REFSHEET_CONTEXT_TOKENS": "2048",
        "HF_HUB_OFFLINE": "1",
        "REFSHEET_DESKTOP_STATUS": str(tmp_path / "status.jsonl"),
    })  # fmt: skip
    return env


class Launched:
    """The desktop app, started as a person would, from a folder of its own."""

    def __init__(self, command: list[str], env: dict[str, str], tmp_path: Path, name: str = "desktop") -> None:
        self.status = Path(env["REFSHEET_DESKTOP_STATUS"])
        self.status.unlink(missing_ok=True)
        self.display = env["DISPLAY"]
        self.log = tmp_path / f"{name}.log"
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        self.started = time.time()
        self.proc = subprocess.Popen(command, cwd=elsewhere, env=env, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT)  # fmt: skip

    def events(self, name: str) -> list[dict]:
        if not self.status.exists():
            return []
        return [r for line in self.status.read_text().splitlines() if (r := json.loads(line))["event"] == name]

    def event(self, name: str, timeout: float, where: Callable[[dict], bool] = lambda _: True) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if found := [r for r in self.events(name) if where(r)]:
                return found[0]
            assert self.proc.poll() is None, f"the app exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {name!r} event in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def window_id(self, timeout: float = 30.0, title: str = "^RefSheet Chat$") -> int:
        """The window's X id, once it is mapped (GTK maps it a moment after pywebview reports it shown)."""
        deadline = time.time() + timeout
        while True:
            search = ["xdotool", "search", "--onlyvisible", "--name", title]
            done = subprocess.run(search, env={**os.environ, "DISPLAY": self.display}, capture_output=True, text=True)
            if ids := [int(line) for line in done.stdout.split()]:
                return ids[0]
            assert time.time() < deadline, f"no window titled {title}: {done.stderr}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def xdotool(display: str, *args: str) -> str:
    done = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True)
    return done.stdout


def _x11():
    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XCreateSimpleWindow.restype = ctypes.c_ulong
    x11.XCreateSimpleWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_int] * 4 + [ctypes.c_uint] + [
        ctypes.c_ulong] * 2  # fmt: skip
    x11.XMapRaised.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XSetInputFocus.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_ulong]
    return x11


def close_window(display: str, window: int) -> None:
    """What a window manager sends when the × is clicked: a WM_DELETE_WINDOW client message."""
    x11 = _x11()

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("data", ctypes.c_long * 5)]  # fmt: skip

    class XEvent(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open display {display}"
    event = XEvent()
    event.xclient.type = 33  # ClientMessage
    event.xclient.window = window
    event.xclient.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", 0)
    event.xclient.format = 32
    event.xclient.data[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", 0)
    x11.XSendEvent(dpy, window, 0, 0, ctypes.byref(event))
    x11.XFlush(dpy)
    x11.XCloseDisplay(dpy)


@contextlib.contextmanager
def another_window_focused(display: str) -> Iterator[int]:
    """Another program's window, raised over ours and given the keyboard (as clicking elsewhere would)."""
    x11 = _x11()
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy
    other = x11.XCreateSimpleWindow(dpy, x11.XDefaultRootWindow(dpy), 0, 0, 400, 300, 0, 0, 0)
    x11.XMapRaised(dpy, other)
    x11.XFlush(dpy)
    time.sleep(0.5)
    x11.XSetInputFocus(dpy, other, 2, 0)  # RevertToParent, CurrentTime
    x11.XFlush(dpy)
    try:
        yield other
    finally:
        x11.XCloseDisplay(dpy)


def focused(display: str) -> int:
    return int(xdotool(display, "getwindowfocus").strip() or 0)


def gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for a reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/_stcore/health", timeout=3) as response:
        return response.status == 200
    return False


def wait_until(check, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def geometry(display: str, window: int) -> tuple[int, int, int, int]:
    shell = xdotool(display, "getwindowgeometry", "--shell", str(window))
    found = dict(line.split("=", 1) for line in shell.split())
    return tuple(int(found[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))  # type: ignore[return-value]


def screenshot_of(display: str, window: int, name: str):
    from PIL import ImageGrab

    x, y, w, h = geometry(display, window)
    shot = ImageGrab.grab(xdisplay=display).crop((x, y, x + w, y + h)).convert("RGB")
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot.save(SHOTS / f"{name}.png")
    return shot


def record(**numbers: object) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    before = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**before, **numbers}, indent=2))


def shows_the_app(shot) -> bool:
    """Not blank: many colours, the app's background (#fffafc) over much of it, and dark text (#2b2130)
    in the main area (right of the sidebar), where the Home page's title and steps are."""
    small = shot.resize((shot.width // 2, shot.height // 2))
    colours = small.getcolors(maxcolors=1 << 20) or []
    total = small.width * small.height
    background = sum(n for n, (r, g, b) in colours if abs(r - 255) + abs(g - 250) + abs(b - 252) < 8)
    main = small.crop((small.width // 3, 0, small.width, small.height)).getcolors(maxcolors=1 << 20) or []
    text = sum(n for n, (r, g, b) in main if r < 90 and g < 70 and b < 90)
    return len(colours) > 50 and background > total * 0.2 and text > 200


def in_window(display: str, window: int, event: dict, name: str) -> tuple[int, int, int, int]:
    """An element's box from a form's event (CSS pixels in the page's view) in window coordinates: the
    page's view fills the window below the menu bar."""
    _, _, width, height = geometry(display, window)
    box, view = event[name], event["view"]
    left, top = width - view["width"], height - view["height"]
    return (round(left + box["x"]), round(top + box["y"]), round(box["width"]), round(box["height"]))


def rose_share(shot, box: tuple[int, int, int, int]) -> float:
    """How much of `box` in the screenshot is the Start button's rose."""
    x, y, w, h = box
    data = shot.crop((x, y, x + w, y + h)).tobytes()
    pixels = [data[i : i + 3] for i in range(0, len(data), 3)]
    return sum(1 for p in pixels if sum(abs(a - b) for a, b in zip(p, ROSE, strict=True)) < 40) / max(1, len(pixels))


def click(display: str, window: int, box: tuple[int, int, int, int]) -> None:
    x, y, w, h = box
    xdotool(display, "mousemove", "--window", str(window), str(x + w // 2), str(y + h // 2))
    time.sleep(0.2)
    xdotool(display, "click", "1")


def source_app(tmp_path: Path, display: str, tiny_gguf, **changes: str) -> tuple[dict[str, str], list[str]]:
    env = desktop_env(tmp_path, display, tiny_gguf)
    env["PYTHONPATH"] = str(ROOT)  # `python -m desktop` from another folder
    env.update(changes)
    return env, [PYTHON, "-m", "desktop"]


@pytest.mark.slow
def test_the_window_shows_home_with_its_icon_and_closing_it_stops_the_server(tmp_path: Path, display: str,
                                                                              tiny_gguf) -> None:  # fmt: skip
    env, command = source_app(tmp_path, display, tiny_gguf)
    app = Launched(command, env, tmp_path)
    try:
        server = app.event("server", 120)
        usable = app.event("usable", 180)
        assert usable["heading"].strip() == "RefSheet Chat"
        record(window_usable_after_s=round(usable["t"] - app.started, 2))
        data = tmp_path / "home" / "data" / "RefSheetChat"
        assert server["data_dir"] == str(data) and (data / "refsheet.db").is_file()
        assert not (tmp_path / "elsewhere" / "data").exists()  # nothing in the folder it was started from
        logs = data / "logs"
        assert "RefSheet Chat: usable" in (logs / "window.log").read_text()  # the window's own log, not only stderr
        assert (logs / "server.log").stat().st_size > 0

        window = app.window_id()
        assert xdotool(display, "getwindowname", str(window)).strip() == "RefSheet Chat"
        xprop = ["xprop", "-id", str(window), "-notype", "-f", "_NET_WM_ICON", "32c", " $0 $1\\n", "_NET_WM_ICON"]
        icon = subprocess.run(xprop, env={**os.environ, "DISPLAY": display}, capture_output=True, text=True)
        assert re.fullmatch(r"_NET_WM_ICON (\d+) (\d+)\s*", icon.stdout), icon.stdout + icon.stderr  # width, height
        assert all(int(n) >= 16 for n in icon.stdout.split()[1:]), icon.stdout
        assert wait_until(lambda: shows_the_app(screenshot_of(display, window, "desktop-home")), 20)

        close_window(display, window)
        assert app.proc.wait(30) == 0
        assert wait_until(lambda: gone(server["pid"]), 15), "the server outlived the window"
        assert wait_until(lambda: port_free(server["port"]), 15), "the server's port is still taken"
        assert app.event("closed", 5)
        assert not (data / "window.json").exists()  # the data folder is free for the next window
    finally:
        app.stop()


@pytest.mark.slow
def test_on_a_1366x768_screen_start_is_in_the_window_and_starts_a_gguf_model(tmp_path: Path, laptop_display: str,
                                                                             tiny_gguf) -> None:  # fmt: skip
    from PIL import Image

    display = laptop_display
    env, command = source_app(tmp_path, display, tiny_gguf)
    for name in ("REFSHEET_GGUF_MODEL", "REFSHEET_GGUF_MMPROJ"):
        env.pop(name)
    app = Launched(command, env, tmp_path)
    try:
        form = app.event("first-run", 60)
        assert form["way"] == "gguf_files" and form["cancel"] is None  # nothing chosen yet: nothing to go back to
        window = app.window_id()
        x, y, width, height = geometry(display, window)
        assert x >= 0 and y >= 0 and x + width <= 1366 and y + height <= 768, "the window is larger than the screen"
        start, view = form["start"], form["view"]
        assert start["x"] >= 0 and start["x"] + start["width"] <= view["width"]
        assert start["y"] >= 0 and start["y"] + start["height"] <= view["height"], f"Start is off screen: {form}"
        time.sleep(1.0)  # the form's script has focused the model file's field
        xdotool(display, "windowfocus", str(window))
        xdotool(display, "type", "--delay", "5", str(tiny_gguf[1]))
        shot = screenshot_of(display, window, "desktop-first-run-1366x768")
        box = in_window(display, window, form, "start")
        assert rose_share(shot, box) > 0.5, "the screenshot shows no Start button where the page says it is"
        Image.open(SHOTS / "desktop-first-run-1366x768.png").crop(
            (box[0], box[1], box[0] + box[2], box[1] + box[3])).save(SHOTS / "desktop-first-run-start.png")  # fmt: skip
        click(display, window, box)  # pressed where the window shows it
        server = app.event("server", 120)
        assert app.event("usable", 180)["heading"].strip() == "RefSheet Chat"
        saved = (tmp_path / "home" / "config" / "RefSheetChat" / "desktop.toml").read_text()
        assert f'gguf_model = "{tiny_gguf[1]}"' in saved and f'gguf_mmproj = "{tiny_gguf[2]}"' in saved
        assert (
            'backend = "gguf"' in saved
            and not (tmp_path / "home" / "config" / "RefSheetChat" / "secrets.toml").exists()
        )
        record(first_run_window=[width, height], first_run_start_box=box)
        app.proc.send_signal(signal.SIGTERM)  # `kill`, or Ctrl+C in a terminal: closes like the window's ×
        assert app.proc.wait(30) == 0
        assert wait_until(lambda: gone(server["pid"]), 15)
    finally:
        app.stop()


@pytest.mark.slow
def test_a_second_launch_brings_the_first_window_forward_and_exits_and_ctrl_q_quits(tmp_path: Path, display: str,
                                                                                    tiny_gguf) -> None:  # fmt: skip
    env, command = source_app(tmp_path, display, tiny_gguf)
    app = Launched(command, env, tmp_path)
    try:
        server = app.event("server", 120)
        app.event("usable", 180)
        window = app.window_id()
        with another_window_focused(display) as other:
            assert focused(display) == other
            second_env = {**env, "REFSHEET_DESKTOP_STATUS": str(tmp_path / "second.jsonl")}
            second = Launched(command, second_env, tmp_path, name="second")
            assert second.proc.wait(30) == 0, second.log.read_text()
            assert "already running" in second.log.read_text()
            assert second.events("handed-over") and not second.events("server")  # no second server, no second model
            assert app.event("raised", 10)["do"] == "show"
            assert wait_until(lambda: focused(display) == window, 10), "the first window did not come to the front"
        assert len(app.events("server")) == 1 and not gone(server["pid"])

        xdotool(display, "windowfocus", "--sync", str(window))
        xdotool(display, "key", "ctrl+q")
        assert app.proc.wait(30) == 0, "Ctrl+Q did not quit"
        assert wait_until(lambda: gone(server["pid"]), 15)
    finally:
        app.stop()


@pytest.mark.slow
def test_cancel_in_choose_the_model_leaves_the_server_alone(tmp_path: Path, display: str, tiny_gguf) -> None:
    env, command = source_app(tmp_path, display, tiny_gguf)
    app = Launched(command, env, tmp_path)
    try:
        server = app.event("server", 120)
        app.event("usable", 180)
        # "Choose the model…": here through a second launch with --setup, which opens it in the running window.
        second = Launched([*command, "--setup"], {**env, "REFSHEET_DESKTOP_STATUS": str(tmp_path / "second.jsonl")},
                          tmp_path, name="second")  # fmt: skip
        assert second.proc.wait(30) == 0, second.log.read_text()
        dialog = app.event("dialog", 30)
        assert dialog["cancel"] and dialog["way"] == "gguf_files"
        dialog_window = app.window_id(title="^Choose the model")
        assert not gone(server["pid"]) and answers(server["url"]), "the dialog stopped the server"
        start = in_window(display, dialog_window, dialog, "start")
        shown = lambda: rose_share(screenshot_of(display, dialog_window, "desktop-choose-the-model"), start) > 0.5  # noqa: E731
        assert wait_until(shown, 20), "the dialog shows no Start button"
        click(display, dialog_window, in_window(display, dialog_window, dialog, "cancel"))
        assert app.event("dialog-closed", 10)["outcome"] == "cancelled"
        assert wait_until(lambda: not xdotool(display, "search", "--onlyvisible", "--name", "^Choose the model"), 10)
        time.sleep(2)
        assert [e["pid"] for e in app.events("server")] == [server["pid"]], "the server was restarted"
        assert not gone(server["pid"]) and answers(server["url"])

        # Start in the dialog is what restarts the server (with the model chosen there).
        app.status.write_text("")
        subprocess.run([*command, "--setup"], cwd=tmp_path / "elsewhere", capture_output=True, timeout=30,
                       env={**env, "REFSHEET_DESKTOP_STATUS": str(tmp_path / "third.jsonl")})  # fmt: skip
        dialog = app.event("dialog", 30)
        dialog_window = app.window_id(title="^Choose the model")
        xdotool(display, "windowfocus", "--sync", str(dialog_window))
        xdotool(display, "type", "--delay", "5", str(tiny_gguf[1]))
        click(display, dialog_window, in_window(display, dialog_window, dialog, "start"))
        assert app.event("dialog-closed", 20)["outcome"] == "saved"
        again = app.event("server", 120)
        assert again["pid"] != server["pid"] and gone(server["pid"]) and answers(again["url"])
        saved = (tmp_path / "home" / "config" / "RefSheetChat" / "desktop.toml").read_text()
        assert f'gguf_model = "{tiny_gguf[1]}"' in saved
        close_window(display, app.window_id())
        assert app.proc.wait(30) == 0
    finally:
        app.stop()


@pytest.mark.slow
def test_a_killed_server_is_reaped_said_and_restarted(tmp_path: Path, display: str, tiny_gguf) -> None:
    from core.base.i18n import t

    env, command = source_app(tmp_path, display, tiny_gguf)
    app = Launched(command, env, tmp_path)
    try:
        server = app.event("server", 120)
        app.event("usable", 180)
        killed = time.time()
        os.kill(server["pid"], signal.SIGKILL)
        stopped = app.event("server-stopped", 10)
        assert (stopped["pid"], stopped["reason"]) == (server["pid"], "killed by SIGKILL")
        said = app.event("restarting", 10)
        assert said["shown"] == t("desktop.server_stopped", "en")  # read back from the window: our words
        again = app.event("server", 60, where=lambda r: r["pid"] != server["pid"])
        assert again["restarted"] and answers(again["url"])
        record(server_restarted_after_s=round(again["t"] - killed, 2))
        assert again["t"] - killed < 60
        assert not Path(f"/proc/{server['pid']}").exists(), "the dead server was left a zombie"
        assert app.event("usable", 120, where=lambda r: r["t"] > again["t"])["heading"].strip() == "RefSheet Chat"
        close_window(display, app.window_id())
        assert app.proc.wait(30) == 0
        assert wait_until(lambda: gone(again["pid"]), 15)
    finally:
        app.stop()


@pytest.mark.slow
def test_a_killed_window_leaves_no_server(tmp_path: Path, display: str, tiny_gguf) -> None:
    env, command = source_app(tmp_path, display, tiny_gguf)
    app = Launched(command, env, tmp_path)
    try:
        server = app.event("server", 120)
        assert not gone(server["pid"])
        app.proc.send_signal(signal.SIGKILL)
        app.proc.wait(10)
        assert wait_until(lambda: gone(server["pid"]), 15), "an orphan server is left running"
        assert wait_until(lambda: port_free(server["port"]), 15)
    finally:
        app.stop()


# -- The built folder ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle() -> dict:
    """The one-folder build, made once per content (`python -m desktop.build --cache`; minutes the first time)."""
    if importlib_missing := [m for m in ("PyInstaller", "webview", "llama_cpp") if not _importable(m)]:  # in PYTHON
        message = f"needs {', '.join(importlib_missing)} (pip install -r requirements-desktop.txt)"
        if os.environ.get("REFSHEET_REQUIRE_DESKTOP"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    done = subprocess.run([PYTHON, "-m", "desktop.build", "--cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    record(bundle_size_mb=round(report["size_bytes"] / 1e6), bundle_build_s=report["build_seconds"],
           bundle_engine=report["engine"])  # fmt: skip
    return report


def _importable(module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([PYTHON, "-c", probe], capture_output=True).returncode == 0


@pytest.mark.bundle
def test_the_bundle_is_torch_free_lean_and_says_its_version(bundle: dict) -> None:
    folder = Path(bundle["folder"])
    inside = folder / "_internal"
    assert bundle["engine"] == "llama.cpp"
    assert not (inside / "torch").exists() and not (inside / "transformers").exists(), "torch in the default build"
    assert not (inside / "torch" / "test").exists() and not list((inside / "torch").glob("bin/test_*"))
    assert not list(folder.rglob("testing_utils.py")) and not (inside / "streamlit" / "testing").exists()
    assert not list(inside.glob("pyarrow/*flight*")) and not list(inside.glob("pyarrow/*substrait*"))
    assert (inside / "llama_cpp" / "lib" / "libllama.so").exists() and (
        inside / "llama_cpp" / "lib" / "libmtmd.so"
    ).exists()
    record_text = (folder / ".refsheet-build.json").read_text()
    for path in (str(folder), str(ROOT), str(Path.home()), "/opt/", "/tmp/", "/root"):
        assert path not in record_text, f"the build record names a path of the building machine: {record_text}"
    record_ = json.loads(record_text)
    assert set(record_) == {"engine", "version", "key", "built", "build_seconds", "size_bytes"}
    assert bundle["size_bytes"] < TORCH_BUILD_BYTES / 5, f"{bundle['size_bytes'] / 1e6:.0f} MB"
    assert (folder / "RefSheetChat.png").is_file() and "Icon=RefSheetChat" in (
        folder / "RefSheetChat.desktop"
    ).read_text()
    version = subprocess.run([str(folder / "RefSheetChat"), "--version"], capture_output=True, text=True, timeout=60)
    from desktop import VERSION

    assert version.stdout.strip() == f"RefSheet Chat {VERSION} (llama.cpp build {record_['key']}, {record_['built']})"


@pytest.mark.slow
@pytest.mark.bundle
def test_the_built_folder_runs_from_anywhere_opens_every_page_and_keeps_a_streamed_reply(
    tmp_path: Path, display: str, tiny_gguf, bundle: dict, neutral_png: bytes
) -> None:
    folder = Path(bundle["folder"])
    assert not list(folder.rglob("secrets.toml")), "a secrets file went into the build"
    for part in ("Home.py", "pages/chat.py", ".streamlit/config.toml", "storage/migrations/env.py",
                 "streamlit/static/index.html", "desktop/icons/RefSheetChat.png"):  # fmt: skip
        assert (folder / "_internal" / part).exists() or (folder / part).exists(), part

    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _seed, _wait_idle

    env = desktop_env(tmp_path, display, tiny_gguf)
    data = tmp_path / "home" / "data" / "RefSheetChat"
    data.mkdir(parents=True)
    character = _seed(data, neutral_png, "Seraphina", first_mes="Welcome to the glade.")
    app = Launched([str(folder / "RefSheetChat")], env, tmp_path)
    try:
        server = app.event("server", 180)
        usable = app.event("usable", 300)
        assert usable["heading"].strip() == "RefSheet Chat"
        record(bundle_window_usable_after_s=round(usable["t"] - app.started, 2),
               bundle_server_answering_after_s=round(server["t"] - app.started, 2))  # fmt: skip
        assert server["data_dir"] == str(data)
        assert wait_until(lambda: shows_the_app(screenshot_of(display, app.window_id(), "desktop-bundle-home")), 20)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
            for path in ("/", "/create", "/library", f"/chat?character={character}"):  # no table, chart or pandas
                page.goto(f"{server['url']}{path}")
                expect(page.get_by_role("heading", level=1).first).to_be_visible(timeout=120_000)
                _wait_idle(page)
                assert page.locator('[data-testid="stException"]').count() == 0, f"{path}: an exception"
            chat_input = page.locator('[data-testid="stChatInputTextArea"]')
            expect(chat_input).to_be_enabled(timeout=120_000)
            _wait_idle(page)
            chat_input.fill("Hello from the desktop build")
            chat_input.press("Enter")
            messages = page.locator('[data-testid="stChatMessage"]')
            expect(messages).to_have_count(3, timeout=180_000)

            def saved_reply() -> tuple[str, str] | None:
                with contextlib.closing(sqlite3.connect(data / "refsheet.db")) as conn:
                    query = "SELECT role, text, status, stats FROM message ORDER BY turn, variant"
                    rows = conn.execute(query).fetchall()
                users = [r for r in rows if r[0] == "user" and r[1] == "Hello from the desktop build"]
                # Written to the end: the model's own end, or (the tiny random model never ends) its length limit.
                replies = [
                    r
                    for r in rows
                    if r[0] == "assistant"
                    and r[1].strip()
                    and (
                        r[2] == "complete" or (r[2] == "partial" and json.loads(r[3] or "{}").get("finish") == "length")
                    )
                ]
                return (users[0][1], replies[-1][1]) if users and len(replies) >= 2 else None

            # The page stays open while the reply is written, as a person's would: a page closed before
            # the first word stops its reply (and an empty stopped reply is not kept).
            if not wait_until(lambda: saved_reply() is not None, 180):
                with contextlib.closing(sqlite3.connect(data / "refsheet.db")) as conn:
                    query = "SELECT role, text, status, error FROM message ORDER BY turn, variant"
                    rows = conn.execute(query).fetchall()
                shown = [m.inner_text()[:200] for m in messages.all()]
                log = (data / "logs" / "server.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"no complete reply saved in the per-user folder: {rows}\n{shown}\n{log}")
            _wait_idle(page)
            browser.close()
        assert "(llama.cpp)" in (data / "logs" / "server.log").read_text() or list((data / "prefix-cache").rglob("*"))
        close_window(display, app.window_id())
        assert app.proc.wait(30) == 0
        assert wait_until(lambda: gone(server["pid"]), 15) and wait_until(lambda: port_free(server["port"]), 15)
    finally:
        app.stop()
