"""RefSheet Chat as a desktop app: the web app in a native window, and a one-folder build of it.

`python -m desktop` (or the built `RefSheetChat` executable) starts the Streamlit server in a child
process on a free loopback port and shows it in a pywebview window (GTK/WebKit on Linux, Cocoa on
macOS, Edge WebView2 on Windows). pywebview and Streamlit both want the main thread, hence two
processes. The server stops when the window closes, and also when the window's process dies
(`desktop.server` explains how). `python -m desktop.build` makes `dist/RefSheetChat/` with PyInstaller.

    desktop/config.py   where the data and the per-user choices live; the server's environment
    desktop/server.py   the server process: started, watched, stopped (both sides)
    desktop/firstrun.py the first-run screen: a model folder, a hub id, or a model server
    desktop/window.py   the window and its life
    desktop/build.py    the one-folder build (the spec: desktop/RefSheetChat.spec)
"""

from __future__ import annotations

import locale
import os
import sys
from pathlib import Path

APP_NAME = "RefSheetChat"  # folders, the executable
TITLE = "RefSheet Chat"  # what people read


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
