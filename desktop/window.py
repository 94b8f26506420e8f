"""The window: "RefSheet Chat" in pywebview, showing the app's server, which it starts, watches and stops.

The main thread runs the GUI (pywebview insists); one controller thread, alive as long as the window,
does the rest: the first-run screen when needed, the server (started from this thread, so that on
Linux it is signalled when the window's process goes), the page, and the server's watch:

- a server that dies (a crash, kill -9) is reaped, the window says so in its own words and starts it
  again, on the same port where it can, `RESTARTS` tries at most, then shows the page the person was
  on; one that keeps dying (`DEATHS` times in `DEATH_WINDOW`), or does not start, is left stopped, and
  the window shows the end of its log with "Try again";
- "Choose the model…" opens a dialog of its own and leaves the server running: only Start in it
  restarts the server with the new model; Cancel (or Escape, or closing it) changes nothing.

The menu: RefSheet Chat → Choose the model…, Open data folder, Open logs, Quit (Ctrl+Q); Help → About
(the version, the data folder). A second launch on the same data folder (`desktop.instance`) brings
this window to the front, or with `--setup` opens the dialog in it. Closing the window stops the server.

For tests and `bench/desktop.py`, REFSHEET_DESKTOP_STATUS names a file that gets one JSON line per
event: `window`, `first-run` and `dialog` (the form's Start and Cancel boxes in the page's view),
`server` (url, port, pid), `usable` (the Home page is shown, with its heading), `server-stopped`
(and `restarting`, with the heading the window shows), `server-failed`, `raised`, `dialog-closed`,
`closed`. Every event also goes to the window's log (logs/window.log).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.base.i18n import t
from desktop import APP_NAME, TITLE, icon_path, ui_language, version_text
from desktop.config import config_dir, data_dir, logs_dir, needs_first_run, server_environment
from desktop.firstrun import BOXES_JS, FirstRunApi, page
from desktop.instance import Instance, tell_running
from desktop.server import ServerFailed, ServerProcess, exit_reason
from desktop.system import open_folder, rotate

log = logging.getLogger("desktop")

# The Home page is on screen once its title is and the script has finished its run (Streamlit draws as
# the script runs, and greys out what a rerun has not drawn again yet).
HEADING_JS = (
    "(function(){if(!document.querySelector('[data-test-script-state=\"notRunning\"]'))return '';"
    'var h=document.querySelector(\'[data-testid="stMain"] h1, [data-testid="stAppViewContainer"] h1\');'
    "return h ? h.innerText : '';})()"
)
OWN_HEADING_JS = "(function(){var h=document.querySelector('h1');return h ? h.innerText : '';})()"
# Ctrl+Q where the menu has no accelerator of its own (Windows: pywebview's menus take none).
QUIT_KEY_JS = (
    "document.addEventListener('keydown',function(e){if((e.ctrlKey||e.metaKey)&&(e.key==='q'||e.key==='Q'))"
    "{e.preventDefault();window.pywebview.api.quit();}});"
)

RESTARTS = 3  # tries to start a server that died, each a little later
DEATHS = 3  # deaths within DEATH_WINDOW after which it is left stopped
DEATH_WINDOW = 600.0
ROTATE_EVERY = 60.0  # seconds between checks of the server log's size


def _message_page(title: str, text: str, spinner: bool = False, detail: str = "",
                  buttons: tuple[tuple[str, str], ...] = ()) -> str:  # fmt: skip
    """One of the window's own pages: a title, a text, a spinner or the end of a log, and buttons, each
    (label, a method of the page's API)."""
    spin = (
        '<div style="margin:24px auto;width:36px;height:36px;border:4px solid #f6edf2;border-top-color:#c2417a;'
        'border-radius:50%;animation:s 1s linear infinite"></div>'
        "<style>@keyframes s{to{transform:rotate(360deg)}}</style>"
        if spinner
        else ""
    )
    more = (
        '<pre style="white-space:pre-wrap;text-align:left;max-width:900px;margin:16px auto;background:#fff;'
        f'border:1px solid #e6cfdc;border-radius:8px;padding:10px;font-size:.85em">{html.escape(detail)}</pre>'
        if detail
        else ""
    )
    press = "".join(
        f'<button onclick="window.pywebview.api.{method}()" style="background:#c2417a;color:#fff;border:0;'
        f'border-radius:6px;padding:8px 16px;margin:4px;font-size:1em;cursor:pointer">{html.escape(label)}</button>'
        for label, method in buttons
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8"></head><body style="font-family:system-ui,sans-serif;'
        'background:#fffafc;color:#2b2130;text-align:center;padding:10vh 24px 24px">'
        f'<h1 style="color:#c2417a">{html.escape(title)}</h1>{spin}'
        f'<p style="white-space:pre-wrap;text-align:left;max-width:820px;margin:auto">{html.escape(text)}</p>'
        f"{more}<div>{press}</div></body></html>"
    )


def fitted_size(screen: tuple[int, int] | None, wanted: tuple[int, int] = (1280, 900)) -> tuple[int, int]:
    """The window's size: `wanted`, or less where the screen is smaller (room left for panels and the
    title bar), so that a 1366×768 laptop shows all of it."""
    if not screen:
        return wanted
    return min(wanted[0], int(screen[0] * 0.95)), min(wanted[1], int(screen[1] * 0.9))


class Status:
    """Events as JSON lines (REFSHEET_DESKTOP_STATUS) and as lines of the window's log."""

    def __init__(self, path: str | None, started: float) -> None:
        self.path = Path(path) if path else None
        self.started = started
        self.lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        now = time.time()
        record = {"event": event, "t": now, "since_start_s": round(now - self.started, 3), **fields}
        if self.path:
            with self.lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        log.info("RefSheet Chat: %s after %.1f s %s", event, record["since_start_s"], shown)


class WindowApi(FirstRunApi):
    """What the main window's pages may call: the first-run form's methods, and the buttons of the
    window's own pages."""

    def __init__(self, lang: str) -> None:
        super().__init__(lang, on_cancel=self._cancelled)
        self._controller: Any = None  # the Controller, once made

    def _cancelled(self) -> None:
        self._controller.first_run_cancelled.set()

    def try_again(self) -> None:
        self._controller.retry.set()

    def choose_model(self) -> None:
        threading.Thread(target=self._controller.open_dialog, daemon=True).start()

    def open_logs(self) -> None:
        open_folder(logs_dir())

    def quit(self) -> None:
        threading.Thread(target=self._controller.quit, daemon=True).start()


class _Closable:
    """The About window's page API: its Close button."""

    def __init__(self) -> None:
        self._window: Any = None

    def close(self) -> None:
        if self._window is not None:
            threading.Thread(target=self._window.destroy, daemon=True).start()


class Controller:
    """Everything but the GUI loop, in one long-lived thread (`run`); the menu's actions and second
    launches call in from threads of their own."""

    def __init__(self, window: Any, api: WindowApi, status: Status, lang: str, setup: bool) -> None:
        self.window, self.api, self.status, self.lang, self.setup = window, api, status, lang, setup
        api._controller = self
        self.closed = threading.Event()
        self.chosen = threading.Event()  # a model was saved in the dialog: restart the server with it
        self.retry = threading.Event()  # "Try again" on a failure page
        self.first_run_cancelled = threading.Event()
        self.server: ServerProcess | None = None
        self.port = 0  # the server's port, kept across restarts where it is free
        self.deaths: list[float] = []
        self.dialog: Any = None
        self.dialog_lock = threading.Lock()
        self.screen: tuple[int, int] | None = None  # its size, for the dialog's

    # -- the controller thread ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as problem:
            log.exception("The window's controller failed")
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
        if (self.setup or needs_first_run()) and not self._first_run():
            return
        self._serve()

    def _first_run(self) -> bool:
        """The form in the window; False if the window closed instead. With `--setup` and a choice saved
        before, it has Cancel, which keeps that choice."""
        self.api._saved.clear()
        self.first_run_cancelled.clear()
        self.window.load_html(page(self.lang, can_cancel=not needs_first_run()))
        self.status("first-run", **self._boxes(self.window))
        self._wait(self.api._saved, self.first_run_cancelled, self.chosen, self.closed)
        return not self.closed.is_set()

    def _serve(self) -> None:
        """Start the server, show the app, watch the server; start it again when it dies or a new model
        is chosen; until the window closes."""
        reason: str | None = None  # why it is being started again (None: a first start)
        path = ""  # the page to show once it answers
        while not self.closed.is_set():
            self.chosen.clear()
            self.retry.clear()
            if not self._start(reason):
                self._wait(self.chosen, self.retry, self.closed)
                reason, path = None, ""
                continue
            assert self.server is not None
            self.window.load_url(self.server.url + path)
            self._until_usable()
            outcome = self._watch()
            if outcome == "closed":
                return
            if outcome == "chosen":
                self.stop_server()
                reason, path, self.port = None, "", 0
                continue
            path, reason = self._page_path(), exit_reason(int(outcome))
            now = time.monotonic()
            self.deaths = [d for d in self.deaths if now - d < DEATH_WINDOW] + [now]
            if len(self.deaths) > DEATHS:
                text = t("desktop.restart_failed", self.lang, count=len(self.deaths), log=self._log())
                self._show_failure(t("desktop.server_stopped", self.lang), text)
                self._wait(self.chosen, self.retry, self.closed)
                self.deaths.clear()
                reason, path = None, ""

    def _start(self, reason: str | None) -> bool:
        """A new server, answering; False (a failure page shown) if it does not start."""
        tries = RESTARTS if reason else 1
        failed: ServerProcess | None = None
        for attempt in range(1, tries + 1):
            if reason is None:
                self._show(_message_page(TITLE, t("desktop.starting", self.lang), spinner=True))
            else:
                text = t("desktop.restarting", self.lang, reason=reason, attempt=attempt, attempts=tries)
                self._show(_message_page(t("desktop.server_stopped", self.lang), text, spinner=True))
                self.status("restarting", attempt=attempt, reason=reason, shown=self._own_heading(self.window))
            env = server_environment()
            server = ServerProcess(env, logs_dir() / "server.log")
            try:
                url = server.start(port=self.port)
            except ServerFailed:
                failed = server
                if self.closed.is_set():
                    return False
                time.sleep(min(2.0 * attempt, 5.0))
                continue
            self.server, self.port = server, server.port
            assert server.proc is not None
            self.status("server", url=url, port=server.port, pid=server.proc.pid, data_dir=env["REFSHEET_DATA_DIR"],
                        restarted=reason is not None)  # fmt: skip
            return True
        tail = failed.log_tail() if failed else ""
        if reason:
            text = t("desktop.restart_failed", self.lang, count=tries, log=self._log())
            self._show_failure(t("desktop.server_stopped", self.lang), text, tail)
        else:
            text = t("desktop.start_failed", self.lang, log=self._log())
            self._show_failure(t("desktop.failed", self.lang), text, tail)
        return False

    def _watch(self) -> str | int:
        """Until the window closes ("closed"), a new model is chosen ("chosen") or the server dies (its
        exit status: it is reaped)."""
        rotated = time.monotonic()
        while True:
            if self.closed.is_set():
                return "closed"
            if self.chosen.is_set():
                return "chosen"
            if self.server is not None and (code := self.server.died()) is not None:
                assert self.server.proc is not None
                self.status("server-stopped", pid=self.server.proc.pid, returncode=code, reason=exit_reason(code))
                self.stop_server()  # already reaped: this closes its pipe
                return code
            if time.monotonic() - rotated > ROTATE_EVERY:
                rotate(logs_dir() / "server.log")
                rotated = time.monotonic()
            time.sleep(0.25)

    def _until_usable(self, seconds: float = 300.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.closed.is_set() and not self.chosen.is_set():
            if self.server is None or self.server.died() is not None:
                return
            with contextlib.suppress(Exception):
                heading = self.window.evaluate_js(HEADING_JS)
                if heading:
                    self.status("usable", heading=heading)
                    return
            time.sleep(0.2)

    def _page_path(self) -> str:
        """The page the window showed from the server (path and query), to show again after a restart."""
        with contextlib.suppress(Exception):
            url = str(self.window.get_current_url() or "")
            base = f"http://127.0.0.1:{self.port}"
            if url.startswith(base + "/"):
                return url[len(base) :]
        return ""

    def _show(self, document: str) -> None:
        self.window.load_html(document)

    def _show_failure(self, title: str, text: str, tail: str = "") -> None:
        buttons = ((t("desktop.try_again", self.lang), "try_again"),
                   (t("desktop.choose_model", self.lang), "choose_model"),
                   (t("desktop.open_logs", self.lang), "open_logs"))  # fmt: skip
        self._show(_message_page(title, text, detail=tail, buttons=buttons))
        self.status("server-failed", shown=self._own_heading(self.window))

    def _log(self) -> str:
        return str(logs_dir() / "server.log")

    def _own_heading(self, window: Any, seconds: float = 10.0) -> str:
        """The heading a page of the window's own shows, read back from the window (what a person sees)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if heading := window.evaluate_js(OWN_HEADING_JS):
                    return str(heading)
            time.sleep(0.1)
        return ""

    def _boxes(self, window: Any, seconds: float = 15.0) -> dict[str, Any]:
        """The form's Start and Cancel boxes and the page's view, read from the window."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if found := window.evaluate_js(BOXES_JS):
                    return json.loads(found)
            time.sleep(0.1)
        return {}

    def stop_server(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    # -- called from other threads ---------------------------------------------------------------------
    def open_dialog(self) -> None:
        """ "Choose the model…": the form in a window of its own; the server is left alone until Start."""
        import webview

        with self.dialog_lock:
            if self.dialog is not None:
                self.dialog.restore()
                return
            api = FirstRunApi(self.lang, on_saved=lambda: self._dialog_done("saved"),
                              on_cancel=lambda: self._dialog_done("cancelled"))  # fmt: skip
            width, height = fitted_size(self.screen, (780, 760))
            self.dialog = dialog = webview.create_window(
                f"{t('desktop.dialog_title', self.lang)} — {TITLE}", html=page(self.lang, dialog=True), js_api=api,
                width=width, height=height, min_size=(560, 420), background_color="#FFFAFC",
            )  # fmt: skip
            api._window = dialog
            dialog.events.closed += self._dialog_gone
            dialog.events.shown += lambda: _as_dialog(dialog, self.window)
        self.status("dialog", **self._boxes(dialog))

    def _dialog_done(self, outcome: str) -> None:
        with self.dialog_lock:
            dialog, self.dialog = self.dialog, None
        self.status("dialog-closed", outcome=outcome)
        if outcome == "saved":
            self.chosen.set()
        if dialog is not None:
            dialog.destroy()

    def _dialog_gone(self) -> None:
        with self.dialog_lock:
            self.dialog = None

    def about(self) -> None:
        import webview

        text = t("desktop.about_text", self.lang, version=version_text(), data=data_dir(), logs=logs_dir(),
                 config=config_dir())  # fmt: skip
        closer = _Closable()
        document = _message_page(TITLE, text, buttons=((t("desktop.close", self.lang), "close"),))
        closer._window = about = webview.create_window(
            t("desktop.about", self.lang), html=document, js_api=closer, width=680, height=420,
            background_color="#FFFAFC",
        )  # fmt: skip
        about.events.shown += lambda: _as_dialog(about, self.window)

    def on_second_launch(self, message: dict[str, Any]) -> dict[str, Any]:
        """A second launch on this data folder: this window to the front (and the dialog, with --setup)."""
        if message.get("do") == "setup":  # the dialog comes to the front of its own
            threading.Thread(target=self.open_dialog, daemon=True).start()
        else:
            with contextlib.suppress(Exception):
                self.window.restore()  # un-minimise, raise, focus
        self.status("raised", do=message.get("do", "show"))
        return {"ok": True, "pid": os.getpid()}

    def quit(self) -> None:
        self.window.destroy()

    def on_closed(self) -> None:
        self.closed.set()
        import webview

        for other in list(webview.windows):  # the dialog and About go with the window
            if other is not self.window:
                with contextlib.suppress(Exception):
                    other.destroy()


def _screen() -> tuple[int, int] | None:
    """The (first) screen's size, before the window is made. On Linux from GDK itself: pywebview's own
    `screens` would set up its GTK application before it is given the menu, which then never shows."""
    with contextlib.suppress(Exception):
        if sys.platform.startswith("linux"):
            import gi

            gi.require_version("Gdk", "3.0")
            gi.require_version("Gtk", "3.0")
            from gi.repository import Gdk, Gtk

            Gtk.init_check(None)
            geometry = Gdk.Display.get_default().get_monitor(0).get_geometry()
            return int(geometry.width), int(geometry.height)
        import webview

        first = webview.screens[0]
        return int(first.width), int(first.height)
    return None


def _as_dialog(window: Any, parent: Any) -> None:
    """A secondary window (the dialog, About) as a dialog of the main one: above it, in front, and without
    the app's menu bar, which GTK gives every window of the app."""
    with contextlib.suppress(Exception):
        from gi.repository import GLib

        def arrange() -> bool:
            if window.native is not None:
                window.native.set_show_menubar(False)
                if parent.native is not None:
                    window.native.set_transient_for(parent.native)
                window.native.present()
            return False

        GLib.idle_add(arrange)


def _gtk_quit_accelerator(quit_action: Any) -> None:
    """Ctrl+Q for the menu's Quit (pywebview's menus take no accelerators: set on its GTK application)."""
    with contextlib.suppress(Exception):
        from gi.repository import GLib
        from webview.platforms import gtk

        def bind() -> bool:
            for name, function in gtk._app_actions.items():
                if function == quit_action:
                    gtk._app.set_accels_for_action(f"app.{name}", ["<Primary>q"])
            return False

        GLib.idle_add(bind)


def run(setup: bool = False, started: float | None = None) -> int:
    """Open the window and serve the app in it until the window closes; or, when a window already has
    this data folder, hand over to it. Returns the exit status."""
    started = started or time.time()
    status = Status(os.environ.get("REFSHEET_DESKTOP_STATUS"), started)
    lang = ui_language()
    instance = Instance(data_dir())
    if not instance.claim():
        answer = tell_running(data_dir(), {"do": "setup" if setup else "show"})
        if answer is None:
            holder_pid = "?"
            with contextlib.suppress(OSError, ValueError):
                holder_pid = json.loads((data_dir() / "window.json").read_text())["pid"]
            print(t("desktop.not_answering", lang, folder=data_dir(), pid=holder_pid), file=sys.stderr)
            return 1
        status("handed-over", to_pid=answer.get("pid"))
        print(t("desktop.already_running", lang, folder=data_dir()), file=sys.stderr)
        return 0
    try:
        return _run_window(status, lang, setup, instance)
    finally:
        instance.release()


def _run_window(status: Status, lang: str, setup: bool, instance: Instance) -> int:
    import webview
    from webview.menu import Menu, MenuAction, MenuSeparator

    if sys.platform.startswith("linux"):  # WM_CLASS, which the menu entry's StartupWMClass names
        with contextlib.suppress(Exception):
            from gi.repository import GLib

            GLib.set_prgname(APP_NAME)
    screen = _screen()
    width, height = fitted_size(screen)
    api = WindowApi(lang)
    window = webview.create_window(
        TITLE,
        html=_message_page(TITLE, t("desktop.starting", lang), spinner=True),
        js_api=api,
        width=width,
        height=height,
        min_size=(720, 540),
        text_select=True,
        zoomable=True,
        background_color="#FFFAFC",
    )
    controller = Controller(window, api, status, lang, setup)
    controller.screen = screen
    api._window = window
    window.events.closed += controller.on_closed
    if sys.platform == "win32":
        window.events.loaded += lambda: window.evaluate_js(QUIT_KEY_JS)

    def in_thread(action):
        return lambda: threading.Thread(target=action, daemon=True).start()

    quit_action = in_thread(controller.quit)
    menu = [
        Menu(TITLE, [
            MenuAction(t("desktop.choose_model", lang), in_thread(controller.open_dialog)),
            MenuSeparator(),
            MenuAction(t("desktop.open_data", lang), in_thread(lambda: open_folder(data_dir()))),
            MenuAction(t("desktop.open_logs", lang), in_thread(lambda: open_folder(logs_dir()))),
            MenuSeparator(),
            MenuAction(t("desktop.quit", lang), quit_action),
        ]),
        Menu(t("desktop.menu_help", lang), [MenuAction(t("desktop.about", lang), in_thread(controller.about))]),
    ]  # fmt: skip

    def on_terminate(_signum: int, _frame: Any) -> None:  # `kill <pid>` or Ctrl+C: close like the window
        threading.Thread(target=controller.quit, daemon=True).start()

    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_terminate)

    thread = threading.Thread(target=controller.run, name="refsheet-desktop", daemon=True)

    def begin() -> None:
        instance.listen(controller.on_second_launch)
        _gtk_quit_accelerator(quit_action)
        thread.start()

    status("window", data_dir=str(data_dir()), config_dir=str(config_dir()), size=[width, height],
           version=version_text())  # fmt: skip
    try:
        webview.start(begin, menu=menu, icon=str(icon_path()))
    finally:
        controller.closed.set()
        controller.stop_server()
        thread.join(15)
        status("closed")
    return 0
