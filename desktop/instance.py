"""One window per data folder: a second launch hands over to the first and exits.

Two windows on one data folder would mean two servers loading the model (twice the memory) and writing
one database and one prefix cache. So the window holds a lock, `window.lock` in the data folder (an
operating-system lock: released when the process ends in any way), and listens on a loopback socket
whose port and key it writes to `window.json` beside it (readable by this user only). A second launch
that finds the lock taken connects, says what it was asked to do (`show`: bring the window to the
front; `setup`: open "Choose the model…" in it), and exits. The connection is authenticated with the
key (`multiprocessing.connection`'s HMAC challenge), and only JSON travels on it, never pickles.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger("desktop.instance")
CALLER_SECONDS = 10.0  # a caller silent this long in the middle of the exchange is dropped
MAX_CALLERS = 8  # callers answered at once; more are hung up on at once


class Instance:
    """This process's claim on a data folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = FileLock(str(folder / "window.lock"), timeout=0)
        self.info = folder / "window.json"
        self.listener: Listener | None = None
        self.closing = threading.Event()

    def claim(self) -> bool:
        """Take the folder; False when another window has it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except Timeout:
            return False
        # Any window.json here is a crashed window's: gone, so that a second launch waits for this one's
        # instead of knocking at a port that some other program may hold by now.
        with contextlib.suppress(OSError):
            self.info.unlink()
        return True

    def listen(self, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Answer second launches: each message goes to `handle` (in a thread of its own), its answer back."""
        key = secrets.token_bytes(32)
        self.listener = Listener(("127.0.0.1", 0), backlog=16)  # authenticated per caller, in its own thread
        port = self.listener.address[1]
        tmp = self.info.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # a file left there keeps its own permissions: the key goes in a new one, 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"port": port, "pid": os.getpid(), "key": key.hex()}, fh)
        os.replace(tmp, self.info)
        serving = threading.Thread(target=self._serve, args=(self.listener, key, handle, self.closing), daemon=True)
        serving.start()

    @staticmethod
    def _serve(listener: Listener, key: bytes, handle: Callable[[dict[str, Any]], dict[str, Any]],
               closing: threading.Event) -> None:  # fmt: skip
        """Accept callers until the window goes. Any local user or program can connect to a loopback port,
        so the key is checked in each caller's own thread: one that says nothing, too much or hangs up
        at once costs that thread only, never this loop (which `Listener.accept` would block or end)."""
        callers = threading.BoundedSemaphore(MAX_CALLERS)
        while not closing.is_set():
            try:
                conn = listener.accept()
            except OSError as problem:  # closed (the window is going), or out of descriptors for a moment
                if closing.is_set():
                    return
                log.warning("A second launch could not be accepted: %s", problem)
                time.sleep(0.2)
                continue
            if closing.is_set():  # closing a socket does not wake an accept() in progress (Linux)
                conn.close()
                return
            if not callers.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=_answer, args=(conn, key, handle, callers), daemon=True).start()

    def release(self) -> None:
        self.closing.set()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                self.info.unlink()
        if self.lock.is_locked:
            self.lock.release()


def _time_limit(conn: Connection, seconds: float) -> None:
    """Make each read from `conn` give up after `seconds` (SO_RCVTIMEO on its socket, through a duplicate of
    it): a caller that stops in the middle of a message is then dropped instead of holding its thread."""
    if os.name == "nt":
        value = struct.pack("L", int(seconds * 1000))
    else:
        value = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    with contextlib.suppress(OSError), socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)


def _answer(conn: Connection, key: bytes, handle: Callable[[dict[str, Any]], dict[str, Any]],
            callers: threading.BoundedSemaphore) -> None:  # fmt: skip
    """One caller: the key's challenge both ways (HMAC), then one JSON object in and its answer out."""
    try:
        with conn:
            _time_limit(conn, CALLER_SECONDS)
            deliver_challenge(conn, key)
            answer_challenge(conn, key)
            if conn.poll(CALLER_SECONDS):
                message = json.loads(conn.recv_bytes(65536))
                if not isinstance(message, dict):
                    raise ValueError(f"not a JSON object: {type(message).__name__}")
                conn.send_bytes(json.dumps(handle(message)).encode())
    except Exception as problem:  # noqa: BLE001 - a caller without the key, or a broken one: ignored
        log.warning("A second launch was not answered: %s", problem)
    finally:
        callers.release()


def holder(folder: Path) -> dict[str, Any]:
    """What the window that holds `folder` wrote about itself ({} while it is still starting)."""
    try:
        return json.loads((folder / "window.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def tell_running(folder: Path, message: dict[str, Any], timeout: float = 15.0) -> dict[str, Any] | None:
    """Send `message` to the window that holds `folder`; its answer, or None if it does not answer (it may
    still be starting: tried again until `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = holder(folder)
        if info:
            answer: list[dict[str, Any]] = []

            def ask(info: dict[str, Any] = info, answer: list[dict[str, Any]] = answer) -> None:
                with contextlib.suppress(Exception), Client(("127.0.0.1", int(info["port"])),
                                                            authkey=bytes.fromhex(info["key"])) as conn:  # fmt: skip
                    conn.send_bytes(json.dumps(message).encode())
                    if conn.poll(10):
                        answer.append(json.loads(conn.recv_bytes(65536)))

            asking = threading.Thread(target=ask, daemon=True)  # a stopped window must not hang this launch
            asking.start()
            asking.join(max(1.0, deadline - time.monotonic()))
            if answer:
                return answer[0]
        time.sleep(0.3)
    return None
