"""The folder of saved character prefixes, as both in-process engines keep it (each with its own format:
safetensors of KV tensors for transformers, llama.cpp's sequence state for the GGUF engine).

One file per prefix, named by a hash of the model's identity and the prefix's exact keys; written to a
temporary name and renamed, so a crash leaves no half file under a real name; touched when read, so the
least recently used go first when the folder passes its byte budget; deleted when it cannot be used
(the next reply computes the prefix again and writes a good one). A full or read-only disk costs only
the saving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)


class PrefixFiles:
    """Prefix files in `folder`, at most `limit_bytes` of them, for the model `identity`; a subclass
    names its `suffix` and reads and writes its own format."""

    suffix: ClassVar[str]

    def __init__(self, folder: Path, limit_bytes: int, identity: dict[str, str]) -> None:
        self.folder, self.limit_bytes = Path(folder), limit_bytes
        self._identity = json.dumps(identity, sort_keys=True)
        self._lock = threading.Lock()
        self.loads = self.saves = self.dropped = 0

    def path_for(self, keys: Sequence[int]) -> Path:
        digest = hashlib.sha256(self._identity.encode())
        digest.update(json.dumps(list(keys)).encode())
        return self.folder / f"{digest.hexdigest()[:32]}{self.suffix}"

    def drop(self, path: Path, why: object) -> None:
        """Delete a file that cannot be used, saying why in the log."""
        log.warning("dropping the saved character prefix %s: %s", path.name, why)
        with self._lock:
            self.dropped += 1
        path.unlink(missing_ok=True)

    def used(self, path: Path) -> None:
        """A file just read: evicted last."""
        with contextlib.suppress(OSError):
            os.utime(path)
        with self._lock:
            self.loads += 1

    def write(self, path: Path, writer: Callable[[Path], None]) -> None:
        """`writer` fills a temporary file, which then takes `path`'s name; then the folder is trimmed."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            writer(temporary)
            with temporary.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(temporary, path)
        except Exception as exc:  # noqa: BLE001 - a full or read-only disk: the prefix is just not kept
            log.warning("could not save a character prefix: %s", exc)
            with contextlib.suppress(OSError):  # the folder itself may be what is wrong
                temporary.unlink(missing_ok=True)
            return
        with self._lock:
            self.saves += 1
        self.trim()

    def trim(self) -> None:
        """Delete the least recently used files until the folder fits its budget."""
        with self._lock:
            files = []
            for path in self.folder.glob(f"*{self.suffix}"):
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    files.append((stat.st_mtime_ns, stat.st_size, path))
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if total <= self.limit_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"disk_loads": self.loads, "disk_saves": self.saves}
