"""KV snapshots of llama.cpp's sequence: kept in memory, and character prefixes on disk.

A `State` is what `llama_state_seq_get_data` writes (the KV cells of the positions, no logits) with the
keys of those positions. `States` keeps conversations set aside while another conversation uses the
context, and character prefixes (instruction + sheets, already encoded), in one LRU bounded in bytes.

`StateDisk` writes prefix states so the first reply after a restart skips the projector and the prefix:
one file per prefix, named by a hash of the model's identity (GGUF and mmproj files, llama.cpp
version) and the prefix's keys, with both repeated inside and a sha256 of the data, all checked on
reading: a file is only used by the model and prompt that made it, and a damaged one is deleted (the
next reply computes the prefix again and writes a good one). Written to a temporary name and renamed;
the folder kept within a byte budget by evicting the least recently used.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.model.backends.prefix_files import PrefixFiles

SUFFIX = ".gguf-kv"
MAGIC = b"RSKV1\n"


@dataclass(frozen=True)
class State:
    keys: tuple[int, ...]
    data: bytes = b""

    @property
    def nbytes(self) -> int:
        return len(self.data)


class States:
    """Snapshots by name ("prefix:<key>", or a conversation's key), least recently used dropped first."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self._entries: OrderedDict[str, State] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, name: str) -> State | None:
        with self._lock:
            state = self._entries.get(name)
            if state is not None:
                self._entries.move_to_end(name)
            return state

    def put(self, name: str, state: State) -> None:
        if state.nbytes > self.limit_bytes:
            return
        with self._lock:
            self._entries[name] = state
            self._entries.move_to_end(name)
            while sum(s.nbytes for s in self._entries.values()) > self.limit_bytes:
                self._entries.popitem(last=False)
                self.evictions += 1

    def pop(self, name: str) -> State | None:
        with self._lock:
            return self._entries.pop(name, None)

    def discard(self, state: State) -> None:
        """Forget `state` under whatever names it is kept."""
        with self._lock:
            for name in [n for n, s in self._entries.items() if s is state]:
                del self._entries[name]

    def report(self) -> dict[str, Any]:
        with self._lock:
            return {"entries": len(self._entries), "bytes": sum(s.nbytes for s in self._entries.values())}


class StateDisk(PrefixFiles):
    """Prefix states in `folder`, at most `limit_bytes` of them, for the model `identity`."""

    suffix = SUFFIX

    def __init__(self, folder: Path, limit_bytes: int, identity: dict[str, str]) -> None:
        super().__init__(folder, limit_bytes, identity)
        self._writer: threading.Thread | None = None

    def load(self, keys: Sequence[int]) -> State | None:
        """The saved state of exactly `keys`, or None (a file that cannot be used is deleted)."""
        path = self.path_for(keys)
        if not path.is_file():
            return None
        try:
            blob = path.read_bytes()
            if not blob.startswith(MAGIC):
                raise ValueError("not a saved KV state")
            (length,) = struct.unpack_from("<I", blob, len(MAGIC))
            start = len(MAGIC) + 4
            header = json.loads(blob[start : start + length])
            data = blob[start + length :]
            if header.get("identity") != self._identity or header.get("keys") != list(keys):
                raise ValueError("made by another model or for another prompt")
            if header.get("sha256") != hashlib.sha256(data).hexdigest():
                raise ValueError("damaged: its data does not match its checksum")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is dropped and made again
            self.drop(path, exc)
            return None
        self.used(path)
        return State(tuple(keys), data)

    def save(self, state: State) -> None:
        """Write `state` in the background (one write at a time, in order); `flush` waits for it."""
        previous = self._writer
        self._writer = threading.Thread(target=self._write, args=(previous, state), daemon=True)
        self._writer.start()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.join()

    def _write(self, previous: threading.Thread | None, state: State) -> None:
        if previous is not None:
            previous.join()
        if state.nbytes > self.limit_bytes:
            return
        header = json.dumps(
            {"identity": self._identity, "keys": list(state.keys), "sha256": hashlib.sha256(state.data).hexdigest()}
        ).encode()

        def writer(temporary: Path) -> None:
            with temporary.open("wb") as fh:
                fh.write(MAGIC + struct.pack("<I", len(header)) + header)
                fh.write(state.data)

        self.write(self.path_for(state.keys), writer)
