"""RefSheet Chat as a desktop app: the web app in a native window, and a one-folder build of it.

`python -m desktop` (or the built `RefSheetChat` executable) starts the Streamlit server in a child
process on a free loopback port and shows it in a pywebview window (GTK/WebKit on Linux, Cocoa on
macOS, Edge WebView2 on Windows). pywebview and Streamlit both want the main thread, hence two
processes. The server stops when the window closes, and also when the window's process dies
(`desktop.server` explains how). `python -m desktop.build` makes `dist/RefSheetChat/` with PyInstaller.

    desktop/config.py   where the data and the per-user choices live; the server's environment
    desktop/instance.py one window per data folder: a second launch hands over to the first
    desktop/server.py   the server process: started, watched, restarted, stopped (both sides)
    desktop/firstrun.py the first-run screen and the "Choose the model…" dialog: a GGUF model (files or
                        a hub repository), a model folder, a hub id, or a model server
    desktop/window.py   the window, its menu and its life
    desktop/system.py   this computer: its logs, its file manager, its menu entry (Linux)
    desktop/build.py    the one-folder build (the spec: desktop/RefSheetChat.spec)
"""

from __future__ import annotations

import json
import locale
import os
import sys
from pathlib import Path

APP_NAME = "RefSheetChat"  # folders, the executable
TITLE = "RefSheet Chat"  # what people read
VERSION = "0.24.0"  # the app's version: `--version`, Help → About, the build's record
BUILD_RECORD = ".refsheet-build.json"  # beside the built executable: what `desktop.build` made it from


def is_frozen() -> bool:
    """Running from the PyInstaller build (`sys.executable` is then the app itself)."""
    return bool(getattr(sys, "frozen", False))


def app_root() -> Path:
    """Where `Home.py`, `pages/` and `.streamlit/config.toml` are: the bundle's folder when frozen,
    the repository otherwise. Never the current directory: the app runs from anywhere."""
    if is_frozen():
        return Path(getattr(sys, "_MEIPASS", Path(sys.executable).parent)).resolve()
    return Path(__file__).resolve().parents[1]


def ui_language() -> str:
    """The language of the window's own screens (first run, starting, menu), from the system's locale,
    as the browser's language decides it for the pages: English or 简体中文."""
    from core.base.i18n import ui_language_for

    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if value := os.environ.get(name):
            return ui_language_for(value)
    return ui_language_for(locale.getlocale()[0])


def icon_path() -> Path:
    """The app's icon (256 px PNG): the window's, and the menu entry's on Linux."""
    return app_root() / "desktop" / "icons" / f"{APP_NAME}.png"


def build_record() -> dict[str, object]:
    """What the build recorded beside the executable (its engine, when, from which sources); {} when the
    app runs from its sources."""
    if not is_frozen():
        return {}
    try:
        return json.loads((Path(sys.executable).parent / BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def version_text() -> str:
    """ "0.24.0 (llama.cpp build 3f2a…, 2026-05-01)", or "0.24.0 (from the sources)"."""
    record = build_record()
    if not record:
        return f"{VERSION} (from the sources)"
    return f"{VERSION} ({record.get('engine', '?')} build {record.get('key', '?')}, {record.get('built', '?')})"
