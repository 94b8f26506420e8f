"""The desktop app: the window (pywebview, GTK/WebKit) under Xvfb, its server's life, and the one-folder build.

- The settings a desktop start gives the server (no GUI needed).
- `python -m desktop`, started from another folder with only HOME/XDG folders set: the window opens
  with the Home page (its heading read from the page, the screenshot not blank), data in the per-user
  folder; closing it (WM_DELETE_WINDOW, as a window manager's × sends it) stops the server and frees
  its port; kill -9 of the window's process leaves no server either.
- The built folder (`python -m desktop.build --cache`, marked `bundle`): launched from another folder,
  a message sent through its server gets a streamed reply, saved in the per-user data folder.

The GUI tests need Xvfb, xdotool and an interpreter with requirements-desktop.txt installed (PyGObject
compiles against Debian's WebKitGTK headers, so it is not part of requirements-dev.txt and the README's
test command works on any machine): REFSHEET_DESKTOP_PYTHON, else this one. Without them they are
skipped, unless REFSHEET_REQUIRE_DESKTOP is set (CI sets both: its own venv, as for llama-cpp-python).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

try:
    import platformdirs  # noqa: F401 - the desktop's requirements are installed
except ImportError:
    if os.environ.get("REFSHEET_REQUIRE_DESKTOP"):
        pytest.fail("the desktop tests need: pip install -r requirements-desktop.txt", pytrace=False)
    pytest.skip("needs pip install -r requirements-desktop.txt", allow_module_level=True)

pytestmark = pytest.mark.desktop
PYTHON = os.environ.get("REFSHEET_DESKTOP_PYTHON") or sys.executable  # runs the window and the build
SHOTS = ROOT / "test-artifacts" / "screenshots"
RESULTS = ROOT / "test-artifacts" / "desktop.json"


# -- Settings (no GUI) -------------------------------------------------------------------------------
def test_the_server_gets_per_user_data_and_the_saved_choice_unless_the_environment_says(tmp_path: Path) -> None:
    from desktop.config import Choice, needs_first_run, save_choice, server_environment

    env = {"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "data-home"),
           "XDG_CONFIG_HOME": str(tmp_path / "config-home")}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("REFSHEET_DATA_DIR", "REFSHEET_MODEL", "REFSHEET_BACKEND", "REFSHEET_API_BASE", "HF_TOKEN"):
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
    for form, words in [
        ({"way": "folder", "folder": str(tmp_path / "nowhere")}, "does not exist"),
        ({"way": "folder", "folder": str(tmp_path / "empty")}, "has no config.json"),
        ({"way": "hub", "hub_id": "gemma"}, "owner/name"),
        ({"way": "server", "api_base": "localhost:11434", "api_model": "gemma3:4b"}, "http://"),
        ({"way": "server", "api_base": "http://localhost:11434/v1", "api_model": ""}, "Name the model"),
        ({}, "Choose one"),
    ]:
        with pytest.raises(ValueError, match=words):
            check(form)
    with pytest.raises(ValueError, match="不存在"):  # the system's language is Chinese: so is the message
        check({"way": "folder", "folder": str(tmp_path / "nowhere")}, "zh")
    choice, _ = check({"way": "folder", "folder": str(tmp_path / "model")})
    assert choice.environment() == {"REFSHEET_BACKEND": "local", "REFSHEET_MODEL": str(tmp_path / "model")}
    choice, secrets = check({"way": "server", "api_base": "http://h:8000/v1", "api_model": "g", "api_key": "k"})
    assert choice.environment()["REFSHEET_API_BASE"] == "http://h:8000/v1" and secrets == {"REFSHEET_API_KEY": "k"}


def test_the_first_run_screen_speaks_the_systems_language(monkeypatch: pytest.MonkeyPatch) -> None:
    from desktop import ui_language
    from desktop.firstrun import page

    monkeypatch.setattr("desktop.firstrun.saved_secrets", dict)  # this machine's saved choice aside
    monkeypatch.setattr("desktop.firstrun.saved_choice", lambda: None)
    english, chinese = page("en"), page("zh")
    assert "A model folder on this computer" in english and "这台电脑上的模型文件夹" in chinese
    assert "{{" not in english + chinese and '<html lang="zh-CN">' in chinese
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


# -- Under Xvfb ---------------------------------------------------------------------------------------
def _gui_problem() -> str | None:
    for tool in ("Xvfb", "xdotool"):
        if not shutil.which(tool):
            return f"needs {tool} (apt-get install -y xvfb xdotool)"
    probe = "import webview, gi; gi.require_version('WebKit2', '4.1'); from gi.repository import WebKit2"
    done = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"needs pywebview with GTK/WebKit2 4.1 (see requirements-desktop.txt): {done.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private X display (Xvfb picks a free number), 1280×900."""
    if problem := _gui_problem():
        if os.environ.get("REFSHEET_REQUIRE_DESKTOP"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
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


def desktop_env(tmp_path: Path, display: str, tiny_checkpoint: Path) -> dict[str, str]:
    """A user's environment: HOME and the XDG folders in tmp_path, the tiny model, no data folder set."""
    env = {k: v for k, v in os.environ.items() if k not in ("REFSHEET_DATA_DIR", "DATABASE_URL", "PYTHONPATH")}
    env.update({
        "DISPLAY": display,
        "HOME": str(tmp_path / "home"),
        "XDG_DATA_HOME": str(tmp_path / "home" / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "home" / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "home" / "cache"),
        "REFSHEET_MODEL": str(tiny_checkpoint),
        "REFSHEET_QUANTIZATION": "none",
        "REFSHEET_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "REFSHEET_DESKTOP_STATUS": str(tmp_path / "status.jsonl"),
    })  # fmt: skip
    return env


class Launched:
    """The desktop app, started as a person would, from a folder of its own."""

    def __init__(self, command: list[str], env: dict[str, str], tmp_path: Path) -> None:
        self.status = Path(env["REFSHEET_DESKTOP_STATUS"])
        self.status.unlink(missing_ok=True)
        self.display = env["DISPLAY"]
        self.log = tmp_path / "desktop.log"
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        self.started = time.time()
        self.proc = subprocess.Popen(command, cwd=elsewhere, env=env, stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT)  # fmt: skip

    def event(self, name: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.status.exists():
                for line in self.status.read_text().splitlines():
                    record = json.loads(line)
                    if record["event"] == name:
                        return record
            assert self.proc.poll() is None, f"the app exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"no {name!r} event in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def window_id(self, timeout: float = 30.0) -> int:
        """The window's X id, once it is mapped (GTK maps it a moment after pywebview reports it shown)."""
        deadline = time.time() + timeout
        while True:
            search = ["xdotool", "search", "--onlyvisible", "--name", "^RefSheet Chat$"]
            done = subprocess.run(search, env={**os.environ, "DISPLAY": self.display}, capture_output=True, text=True)
            if ids := [int(line) for line in done.stdout.split()]:
                return ids[0]
            assert time.time() < deadline, f"no window titled RefSheet Chat: {done.stderr}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def xdotool(display: str, *args: str) -> str:
    done = subprocess.run(["xdotool", *args], env={**os.environ, "DISPLAY": display}, capture_output=True, text=True)
    return done.stdout


def close_window(display: str, window: int) -> None:
    """What a window manager sends when the × is clicked: a WM_DELETE_WINDOW client message."""
    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]

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


def wait_until(check, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def screenshot_of(display: str, window: int, name: str):
    from PIL import ImageGrab

    shell = xdotool(display, "getwindowgeometry", "--shell", str(window))
    geometry = dict(line.split("=", 1) for line in shell.split())
    x, y, w, h = (int(geometry[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
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


@pytest.mark.slow
def test_the_window_shows_home_and_closing_it_stops_the_server(tmp_path: Path, display: str,
                                                               tiny_checkpoint: Path) -> None:  # fmt: skip
    env = desktop_env(tmp_path, display, tiny_checkpoint)
    env["PYTHONPATH"] = str(ROOT)  # `python -m desktop` from another folder
    app = Launched([PYTHON, "-m", "desktop"], env, tmp_path)
    try:
        server = app.event("server", 120)
        usable = app.event("usable", 180)
        assert usable["heading"].strip() == "RefSheet Chat"
        record(window_usable_after_s=round(usable["t"] - app.started, 2))
        data = tmp_path / "home" / "data" / "RefSheetChat"
        assert server["data_dir"] == str(data) and (data / "refsheet.db").is_file()
        assert not (tmp_path / "elsewhere" / "data").exists()  # nothing in the folder it was started from

        window = app.window_id()
        assert xdotool(display, "getwindowname", str(window)).strip() == "RefSheet Chat"
        assert wait_until(lambda: shows_the_app(screenshot_of(display, window, "desktop-home")), 20)

        close_window(display, window)
        assert app.proc.wait(30) == 0
        assert wait_until(lambda: gone(server["pid"]), 15), "the server outlived the window"
        assert wait_until(lambda: port_free(server["port"]), 15), "the server's port is still taken"
        assert app.event("closed", 5)
    finally:
        app.stop()


@pytest.mark.slow
def test_the_first_run_screen_takes_a_model_folder_typed_in_and_starts(tmp_path: Path, display: str,
                                                                        tiny_checkpoint: Path) -> None:  # fmt: skip
    env = desktop_env(tmp_path, display, tiny_checkpoint)
    env["PYTHONPATH"] = str(ROOT)
    for name in ("REFSHEET_MODEL", "REFSHEET_BACKEND", "REFSHEET_API_BASE"):
        env.pop(name, None)
    app = Launched([PYTHON, "-m", "desktop"], env, tmp_path)
    try:
        app.event("first-run", 60)
        window = app.window_id()
        time.sleep(1.0)  # the form's script has focused the folder field
        xdotool(display, "windowfocus", str(window))
        xdotool(display, "type", "--delay", "5", str(tiny_checkpoint))
        screenshot_of(display, window, "desktop-first-run")
        xdotool(display, "key", "Return")
        server = app.event("server", 120)
        assert app.event("usable", 180)["heading"].strip() == "RefSheet Chat"
        saved = (tmp_path / "home" / "config" / "RefSheetChat" / "desktop.toml").read_text()
        assert f'model = "{tiny_checkpoint}"' in saved and 'backend = "local"' in saved
        assert not (tmp_path / "home" / "config" / "RefSheetChat" / "secrets.toml").exists()
        app.proc.send_signal(signal.SIGTERM)  # `kill`, or Ctrl+C in a terminal: closes like the window's ×
        assert app.proc.wait(30) == 0
        assert wait_until(lambda: gone(server["pid"]), 15)
    finally:
        app.stop()


@pytest.mark.slow
def test_a_killed_window_leaves_no_server(tmp_path: Path, display: str, tiny_checkpoint: Path) -> None:
    env = desktop_env(tmp_path, display, tiny_checkpoint)
    env["PYTHONPATH"] = str(ROOT)
    app = Launched([PYTHON, "-m", "desktop"], env, tmp_path)
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
    if importlib_missing := [m for m in ("PyInstaller", "webview") if not _importable(m)]:  # in PYTHON
        message = f"needs {', '.join(importlib_missing)} (pip install -r requirements-desktop.txt)"
        if os.environ.get("REFSHEET_REQUIRE_DESKTOP"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    done = subprocess.run([PYTHON, "-m", "desktop.build", "--cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    record(bundle_size_mb=round(report["size_bytes"] / 1e6), bundle_build_s=report["build_seconds"])
    return report


def _importable(module: str) -> bool:
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([PYTHON, "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.bundle
def test_the_built_folder_runs_from_anywhere_and_keeps_a_streamed_reply(
    tmp_path: Path, display: str, tiny_checkpoint: Path, bundle: dict, neutral_png: bytes
) -> None:
    folder = Path(bundle["folder"])
    assert not list(folder.rglob("secrets.toml")), "a secrets file went into the build"
    for part in ("Home.py", "pages/chat.py", ".streamlit/config.toml", "storage/migrations/env.py",
                 "streamlit/static/index.html"):  # fmt: skip
        assert (folder / "_internal" / part).exists() or (folder / part).exists(), part

    from playwright.sync_api import expect, sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, _seed, _wait_idle

    env = desktop_env(tmp_path, display, tiny_checkpoint)
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
            page.goto(f"{server['url']}/chat?character={character}")
            chat_input = page.locator('[data-testid="stChatInputTextArea"]')
            expect(chat_input).to_be_enabled(timeout=120_000)
            _wait_idle(page)
            chat_input.fill("Hello from the desktop build")
            chat_input.press("Enter")
            messages = page.locator('[data-testid="stChatMessage"]')
            expect(messages).to_have_count(3, timeout=180_000)
            _wait_idle(page)
            browser.close()

        def saved_reply() -> tuple[str, str] | None:
            with contextlib.closing(sqlite3.connect(data / "refsheet.db")) as conn:
                rows = conn.execute("SELECT role, text, status FROM message ORDER BY turn, variant").fetchall()
            users = [r for r in rows if r[0] == "user" and r[1] == "Hello from the desktop build"]
            replies = [r for r in rows if r[0] == "assistant" and r[2] == "complete" and r[1].strip()]
            return (users[0][1], replies[-1][1]) if users and len(replies) >= 2 else None

        assert wait_until(lambda: saved_reply() is not None, 120), "no complete reply saved in the per-user folder"
        close_window(display, app.window_id())
        assert app.proc.wait(30) == 0
        assert wait_until(lambda: gone(server["pid"]), 15) and wait_until(lambda: port_free(server["port"]), 15)
    finally:
        app.stop()
