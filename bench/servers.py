"""Starting a server process on loopback and waiting until it answers: for the benchmarks and the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 600) -> None:
    """Until `url` answers; fails with the server's log if the process exits or time runs out."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited; see {log}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server did not answer {url}; see {log}")


@contextmanager
def running(command: list[str], ready_url: str, log: Path) -> Iterator[subprocess.Popen]:
    """A server process (offline: it reaches no model hub), from its first answer until the block ends."""
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    try:
        wait_for_http(ready_url, proc, log)
        yield proc
    finally:
        proc.terminate()
        proc.wait(60)
