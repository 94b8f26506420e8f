"""The window: "RefSheet Chat" in pywebview, showing the app's server, which it starts and stops.

The main thread runs the GUI (pywebview insists); one controller thread, alive as long as the window,
does the rest: the first-run screen when needed, the server (started from this thread, so that on
Linux it is signalled when the window's process goes), the page, and a restart when the model is
chosen again from the menu. Closing the window stops the server.

For tests and `bench/desktop.py`, REFSHEET_DESKTOP_STATUS names a file that gets one JSON line per
event: `server` (url, port, pid), `usable` (the Home page is shown, with its heading), `closed`.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.base.i18n import t
from desktop import TITLE, ui_language
from desktop.config import config_dir, data_dir, needs_first_run, server_environment
from desktop.firstrun import FirstRunApi, page
from desktop.server import ServerFailed, ServerProcess

# The Home page is on screen once its title is and the script has finished its run (Streamlit draws as
# the script runs, and greys out what a rerun has not drawn again yet).
HEADING_JS = (
    "(function(){if(!document.querySelector('[data-test-script-state=\"notRunning\"]'))return '';"
    'var h=document.querySelector(\'[data-testid="stMain"] h1, [data-testid="stAppViewContainer"] h1\');'
    "return h ? h.innerText : '';})()"
)


def _message_page(title: str, text: str, spinner: bool = False) -> str:
    spin = (
        '<div style="margin:24px auto;width:36px;height:36px;border:4px solid #f6edf2;border-top-color:#c2417a;'
        'border-radius:50%;animation:s 1s linear infinite"></div>'
        "<style>@keyframes s{to{transform:rotate(360deg)}}</style>"
        if spinner
        else ""
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"></head><body style="font-family:system-ui,sans-serif;'
        'background:#fffafc;color:#2b2130;text-align:center;padding-top:18vh">'
        f'<h1 style="color:#c2417a">{html.escape(title)}</h1>{spin}'
        f'<pre style="white-space:pre-wrap;text-align:left;max-width:820px;margin:auto">{html.escape(text)}</pre>'
        "</body></html>"
    )


class Status:
    """Events as JSON lines (REFSHEET_DESKTOP_STATUS) and as a line on standard error."""

    def __init__(self, path: str | None, started: float) -> None:
        self.path = Path(path) if path else None
        self.started = started

    def __call__(self, event: str, **fields: Any) -> None:
        now = time.time()
        record = {"event": event, "t": now, "since_start_s": round(now - self.started, 3), **fields}
        if self.path:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"RefSheet Chat: {event} after {record['since_start_s']:.1f} s {shown}"
        print(line.rstrip(), file=sys.stderr, flush=True)


class Controller:
    """Everything but the GUI loop, in one long-lived thread."""

    def __init__(self, window: Any, api: FirstRunApi, status: Status, setup: bool) -> None:
        self.window, self.api, self.status = window, api, status
        self.setup = setup
        self.lang = api._lang  # the window's own screens speak the system's language
        self.closed = threading.Event()
        self.choose_again = threading.Event()
        self.server: ServerProcess | None = None

    def run(self) -> None:
        try:
            self._run()
        except Exception as problem:  # noqa: BLE001 - shown in the window rather than lost in a thread
            if not self.closed.is_set():
                with contextlib.suppress(Exception):
                    self.window.load_html(_message_page(t("desktop.failed", self.lang), repr(problem)))
            self.closed.wait()
        finally:
            self.stop_server()

    def _wait(self, *events: threading.Event) -> None:
        while not any(e.is_set() for e in events):
            time.sleep(0.1)

    def _run(self) -> None:
        while not self.closed.is_set():
            if self.setup or needs_first_run():
                self.api._saved.clear()
                self.window.load_html(page(self.lang))
                self.status("first-run")
                self._wait(self.api._saved, self.closed)
                if self.closed.is_set():
                    return
            self.setup = False
            self.choose_again.clear()
            self.window.load_html(_message_page(TITLE, t("desktop.starting", self.lang), spinner=True))
            env = server_environment()
            self.server = ServerProcess(env, data_dir() / "logs" / "server.log")
            try:
                url = self.server.start()
            except ServerFailed as problem:
                self.window.load_html(_message_page(t("desktop.failed", self.lang), str(problem)))
                self._wait(self.choose_again, self.closed)
                self.setup = True
                continue
            assert self.server.proc is not None
            self.status("server", url=url, port=self.server.port, pid=self.server.proc.pid,
                        data_dir=env["REFSHEET_DATA_DIR"])  # fmt: skip
            self.window.load_url(url)
            self._until_usable()
            self._wait(self.choose_again, self.closed)
            self.stop_server()
            self.setup = True

    def _until_usable(self, seconds: float = 300.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.closed.is_set():
            with contextlib.suppress(Exception):
                heading = self.window.evaluate_js(HEADING_JS)
                if heading:
                    self.status("usable", heading=heading)
                    return
            time.sleep(0.2)

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    def on_closed(self) -> None:
        self.closed.set()


def run(setup: bool = False, started: float | None = None) -> None:
    """Open the window and serve the app in it until the window closes."""
    import webview
    from webview.menu import Menu, MenuAction, MenuSeparator

    started = started or time.time()
    status = Status(os.environ.get("REFSHEET_DESKTOP_STATUS"), started)
    lang = ui_language()
    api = FirstRunApi(lang)
    window = webview.create_window(
        TITLE,
        html=_message_page(TITLE, t("desktop.starting", lang), spinner=True),
        js_api=api,
        width=1280,
        height=900,
        min_size=(720, 540),
        text_select=True,
        zoomable=True,
        background_color="#FFFAFC",
    )
    api._window = window
    controller = Controller(window, api, status, setup)
    window.events.closed += controller.on_closed

    def quit_app() -> None:
        window.destroy()

    choose = MenuAction(t("desktop.choose_model", lang), controller.choose_again.set)
    menu = [Menu(TITLE, [choose, MenuSeparator(), MenuAction(t("desktop.quit", lang), quit_app)])]

    def on_terminate(_signum: int, _frame: Any) -> None:  # `kill <pid>` or Ctrl+C: close like the window
        threading.Thread(target=quit_app, daemon=True).start()

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_terminate)

    thread = threading.Thread(target=controller.run, name="refsheet-desktop", daemon=True)

    def begin() -> None:
        thread.start()

    status("window", data_dir=str(data_dir()), config_dir=str(config_dir()))
    try:
        webview.start(begin, menu=menu)
    finally:
        controller.closed.set()
        controller.stop_server()
        thread.join(15)
        status("closed")
