"""The Streamlit server of the desktop app, a child process of the window: both sides.

The window's side (`ServerProcess`) starts `<this python> -m desktop --serve` (in the build: the app's
own executable with `--serve`) on a free loopback port, in the app's own folder, and waits until it
answers. The server's side (`serve`) makes sure it never outlives the window:

- on Linux the kernel sends it SIGTERM when its parent thread dies, even by SIGKILL
  (`prctl(PR_SET_PDEATHSIG)`, set first thing in the child, then the parent checked once more to
  close the gap between the fork and that call);
- everywhere, a watchdog thread ends it when its standard input (a pipe only the window holds)
  reaches end-of-file, which the operating system does when the window's process exits in any way,
  or when its parent process id changes (POSIX re-parents orphans).

The window's side stops it with SIGTERM (Streamlit shuts down cleanly) when the window closes, and
watches it meanwhile (`desktop.window`): a server that dies is reaped and started again, on the same
port where it is free. The server's messages are worded for the desktop (`set_audience("desktop")`):
they point at the menu's "Choose the model…", not at environment variables.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from desktop import app_root, is_frozen
from desktop.system import rotate

PR_SET_PDEATHSIG = 1


def streamlit_flags(port: int) -> list[str]:
    """Streamlit's options for the desktop server, on the command line so that they hold whatever the
    config files say. Loopback only; at the root (a `baseUrlPath` in the user's own
    ~/.streamlit/config.toml would hide the app from the window and its health check); no usage
    statistics; no outgoing look-up of this machine's address (browser.serverAddress); no development
    mode (a frozen Streamlit turns it on and then proxies the page to port 3000); no file watching."""
    options = {
        "server.port": str(port),
        "server.address": "127.0.0.1",
        "server.baseUrlPath": "",
        "server.headless": "true",
        "server.fileWatcherType": "none",
        "server.runOnSave": "false",
        "browser.gatherUsageStats": "false",
        "browser.serverAddress": "localhost",
        "global.developmentMode": "false",
    }
    return [f"--{key}={value}" for key, value in options.items()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether the server could listen on `port` (as it does: reusing an address whose old connections
    are still closing, on POSIX)."""
    with socket.socket() as sock:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def exit_reason(returncode: int) -> str:
    """How a process ended, as a person reads it: "killed by SIGKILL", "exit code 1"."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


# -- The server's side ---------------------------------------------------------------------------------
def _leave(reason: str) -> None:
    """Stop this server: SIGTERM first (Streamlit's own clean shutdown), then for certain."""
    print(f"RefSheet Chat server: {reason}; stopping.", file=sys.stderr, flush=True)
    threading.Timer(5.0, os._exit, args=(0,)).start()
    if hasattr(signal, "SIGTERM") and os.name == "posix":
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        os._exit(0)


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.name == "posix" and os.getppid() != parent_pid:
        os._exit(0)  # the window died before the signal was set

    def stdin_closed() -> None:  # the raw descriptor: a buffered read would hold a lock at shutdown
        with contextlib.suppress(OSError, ValueError):
            while os.read(sys.stdin.fileno(), 1):
                pass
        _leave("the window's process has gone (its pipe closed)")

    def parent_changed() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        _leave("the window's process has gone (re-parented)")

    if sys.stdin is not None:
        threading.Thread(target=stdin_closed, name="refsheet-watch-stdin", daemon=True).start()
    if os.name == "posix":
        threading.Thread(target=parent_changed, name="refsheet-watch-parent", daemon=True).start()


def serve(port: int, parent_pid: int) -> None:
    """Run the app's Streamlit server in this process (the child), until stopped or orphaned."""
    _die_with_parent(parent_pid)
    from core.base.i18n import set_audience

    set_audience("desktop")
    root = app_root()
    os.chdir(root)  # .streamlit/config.toml (the theme) and the pages are found from here
    from streamlit.web import cli

    cli.main.main(args=["run", str(root / "Home.py"), *streamlit_flags(port)], prog_name="streamlit")


# -- The window's side -----------------------------------------------------------------------------------
# The health check goes straight to the loopback server: an http_proxy in the environment (without a
# no_proxy that names 127.0.0.1) would otherwise send it to the proxy, and the server would never answer.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerFailed(RuntimeError):
    """The server exited or did not answer; the message ends with the end of its log."""


def server_command(port: int) -> list[str]:
    args = ["--serve", "--port", str(port), "--parent", str(os.getpid())]
    if is_frozen():
        return [sys.executable, *args]
    return [sys.executable, "-m", "desktop", *args]


class ServerProcess:
    """One Streamlit server child. Start it from a thread that lives as long as the window: on Linux
    the child is signalled when that thread ends (PR_SET_PDEATHSIG is per thread)."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0, port: int = 0) -> str:
        """Start the server (on `port` if it is given and free) and wait until it answers; its URL."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate(self.log_path)
        for attempt in range(3):  # a port taken between choosing and binding: choose again
            self.port = port if port and attempt == 0 and port_is_free(port) else free_port()
            with self.log_path.open("ab") as log:
                try:
                    self.proc = subprocess.Popen(
                        server_command(self.port),
                        cwd=app_root(),
                        env=self.env,
                        stdin=subprocess.PIPE,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
                    )
                except (OSError, ValueError) as problem:  # a setting too long for the system, or with a NUL
                    log.write(f"RefSheet Chat: the server could not be started: {problem}\n".encode())
                    break
            if self._wait_until_answering(timeout):
                return self.url
            if "already in use" not in self.log_tail():
                break
            self.stop()  # the next try must not leave this one running
        self.stop()
        raise ServerFailed(f"The app's server did not start; its log ({self.log_path}) ends:\n{self.log_tail()}")

    def died(self) -> int | None:
        """The exit status of a server that ended by itself (reaped: no zombie is left), else None."""
        return None if self.proc is None else self.proc.poll()

    def _wait_until_answering(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with _DIRECT.open(f"{self.url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                time.sleep(0.2)
        return False

    def log_tail(self, lines: int = 30, chars: int = 4000) -> str:
        """The log's last `lines` lines (at most `chars` characters)."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 4 * chars))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])[-chars:]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdin:
            with contextlib.suppress(OSError):
                proc.stdin.close()
