"""The desktop app and this computer: its logs, the file manager, the menu entry (Linux).

- **Logs** live in the data folder's `logs/`: `window.log` (this process: what the window did, and any
  error, which a window started from a file manager has no terminal to show) and `server.log` (the
  app's server, written by the server process itself). Each is rotated once it passes `LOG_BYTES`:
  copied to `<name>.1` (and `.1` to `.2`, …, `LOG_BACKUPS` kept), then emptied in place, which is safe
  while the server still appends to it.
- **Open data folder / Open logs**: the system's file manager (`xdg-open`, `open`, `os.startfile`).
- **Menu entry** (Linux, freedesktop): `--install-desktop-entry` writes `refsheetchat.desktop` and the
  icon into the user's own folders (`~/.local/share/applications`, `~/.local/share/icons`);
  `--remove-desktop-entry` removes both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from desktop import APP_NAME, TITLE, app_root, icon_path, is_frozen

LOG_BYTES = 2_000_000
LOG_BACKUPS = 3
ENTRY_ID = "refsheetchat"  # the menu entry's file and icon name


def rotate(path: Path, max_bytes: int = LOG_BYTES, backups: int = LOG_BACKUPS) -> bool:
    """Keep `path` under `max_bytes`: past it, shift `.1`… `.N` up one, copy the log to `.1` and empty it in
    place (a writer that opened it for appending goes on at its new end). True when it rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
        for n in range(backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        shutil.copyfile(path, path.with_name(f"{path.name}.1"))
        with path.open("r+b") as fh:
            fh.truncate(0)
    except OSError:
        return False
    return True


class _RotatingHandler(logging.FileHandler):
    """A file handler that rotates with `rotate` (the same rule as the server's log)."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.stream is not None and self.stream.tell() > LOG_BYTES:
            self.stream.flush()
            rotate(Path(self.baseFilename))
            self.stream.seek(0, os.SEEK_END)


def setup_logging(folder: Path) -> Path:
    """Log this process to `folder/window.log` (and to standard error where there is one); uncaught errors
    in any thread go there too. Returns the log's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "window.log"
    rotate(path)
    handler = _RotatingHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if sys.stderr is not None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(console)
    root.setLevel(logging.INFO)
    log = logging.getLogger("desktop")

    def on_exception(kind, value, traceback) -> None:
        log.error("Uncaught error", exc_info=(kind, value, traceback))

    sys.excepthook = on_exception
    threading.excepthook = lambda args: log.error(
        "Uncaught error in thread %s", getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )  # fmt: skip
    return path


def outside_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for another program (the file manager): without the library path the built app's
    launcher set for itself (PyInstaller keeps the one it was started with as LD_LIBRARY_PATH_ORIG)."""
    env = dict(os.environ if environ is None else environ)
    if is_frozen() or "LD_LIBRARY_PATH_ORIG" in env:
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original:
            env["LD_LIBRARY_PATH"] = original
        else:
            env.pop("LD_LIBRARY_PATH", None)
    return env


def open_folder(folder: Path) -> list[str] | None:
    """Show `folder` in the system's file manager (made if missing); returns the command run, if any."""
    folder.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        os.startfile(folder)
        return None
    command = ["open" if sys.platform == "darwin" else "xdg-open", str(folder)]
    with contextlib.suppress(OSError):
        subprocess.Popen(command, env=outside_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    return command


# -- The menu entry (Linux) --------------------------------------------------------------------------------
def _xdg_data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def entry_paths() -> tuple[Path, Path]:
    """Where the menu entry and its icon go: the user's own folders, no administrator needed."""
    data = _xdg_data_home()
    icon = data / "icons" / "hicolor" / "256x256" / "apps" / f"{ENTRY_ID}.png"
    return data / "applications" / f"{ENTRY_ID}.desktop", icon


def launch_command() -> list[str]:
    """How the menu entry starts this app: the built executable, or this Python with `-m desktop`."""
    if is_frozen():
        return [sys.executable]
    return [sys.executable, "-m", "desktop"]


def desktop_entry(command: list[str], icon: str = ENTRY_ID) -> str:
    """A freedesktop.org menu entry for `command`."""

    def quoted(arg: str) -> str:
        """The Exec key's quoting: "…" around anything with a space or a reserved character, `"` ` $ \\
        escaped inside; `%` doubled (a field code otherwise: `%f` would become the files opened)."""
        arg = arg.replace("%", "%%")
        if arg and not any(ch in arg for ch in " \t\n\"'\\><~|&;$*?#()`"):
            return arg
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace("$", "\\$") + '"'

    def value(text: str) -> str:
        """A string value of the file: its own escapes come on top of the Exec quoting (so a `\\"` inside
        quotes is written `\\\\"`, as the specification says), and a line break must not end the line."""
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")

    lines = [
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.5",
        f"Name={TITLE}",
        "Comment=Chat with your characters, drawn from their reference sheets",
        "Comment[zh_CN]=与你的角色聊天，角色来自他们的设定图",
        f"Exec={value(' '.join(quoted(arg) for arg in command))}",
        f"Icon={icon}",
        "Terminal=false",
        "Categories=Graphics;Chat;",
        f"StartupWMClass={APP_NAME}",
    ]
    if not is_frozen():
        lines.append(f"Path={value(str(app_root()))}")
    return "\n".join(lines) + "\n"


def install_desktop_entry() -> list[Path]:
    """Add RefSheet Chat to the desktop's application menu (this user only). Returns the files written."""
    entry, icon = entry_paths()
    entry.parent.mkdir(parents=True, exist_ok=True)
    icon.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(icon_path(), icon)
    entry.write_text(desktop_entry(launch_command()), encoding="utf-8")
    entry.chmod(0o755)
    with contextlib.suppress(OSError):  # menus that cache entries notice the new one sooner
        subprocess.run(["update-desktop-database", str(entry.parent)], env=outside_environment(),
                       capture_output=True, timeout=20)  # fmt: skip
    return [entry, icon]


def remove_desktop_entry() -> list[Path]:
    """Take the menu entry and its icon away again. Returns the files removed."""
    removed = []
    for path in entry_paths():
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed
