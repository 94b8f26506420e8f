"""Character-prefix KV snapshots on disk, so a restart does not send every character back through
the vision tower (one 896 px sheet: most of a minute on a CPU) before its first reply.

A file holds the KV tensors of one prefix (instruction + sheets, already encoded) in safetensors,
named by a hash of the model's identity (checkpoint, revision, quantization, dtype, device,
transformers version) and the prefix's exact token ids; the same two are repeated inside and checked
on reading, so a file is only ever used by the model and the prompt that made it. Files are written
to a temporary name and renamed (a crash leaves no half file under a real name), kept within a byte
budget by evicting the least recently used, and deleted when they cannot be read: the next reply
computes the prefix again and writes a good one.
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
from typing import Any

log = logging.getLogger(__name__)
SUFFIX = ".kv.safetensors"


class PrefixDisk:
    """Prefix KV snapshots in `folder`, at most `limit_bytes` of them, for the model `identity`."""

    def __init__(self, folder: Path, limit_bytes: int, identity: dict[str, str], new_cache: Callable[[], Any]):
        self.folder, self.limit_bytes, self._new_cache = Path(folder), limit_bytes, new_cache
        self._identity = json.dumps(identity, sort_keys=True)
        self._lock = threading.Lock()
        self.loads = self.saves = self.dropped = 0

    def path_for(self, ids: Sequence[int]) -> Path:
        digest = hashlib.sha256(self._identity.encode())
        digest.update(json.dumps(list(ids)).encode())
        return self.folder / f"{digest.hexdigest()[:32]}{SUFFIX}"

    def load(self, ids: Sequence[int], device: str) -> Any | None:
        """The saved cache holding exactly `ids`, or None (a file that cannot be used is deleted)."""
        from safetensors import safe_open

        path = self.path_for(ids)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device=device) as f:
                meta = f.metadata() or {}
                if meta.get("identity") != self._identity or json.loads(meta.get("ids", "null")) != list(ids):
                    raise ValueError("made by another model or for another prompt")
                layers = json.loads(meta["layers"])
                cache = self._new_cache()
                if len(cache.layers) != len(layers):
                    raise ValueError(f"{len(layers)} layers saved, the model has {len(cache.layers)}")
                for i, (layer, saved) in enumerate(zip(cache.layers, layers, strict=True)):
                    if type(layer).__name__ != saved["kind"]:
                        raise ValueError(f"layer {i} is {type(layer).__name__}, saved as {saved['kind']}")
                    keys, values = f.get_tensor(f"k{i}"), f.get_tensor(f"v{i}")
                    layer.lazy_initialization(keys, values)
                    layer.keys, layer.values = keys, values
                    if "cumulative_length" in saved:
                        layer.cumulative_length = saved["cumulative_length"]
        except Exception as exc:  # noqa: BLE001 - any unreadable file is dropped and made again
            log.warning("dropping the saved character prefix %s: %s", path.name, exc)
            with self._lock:
                self.dropped += 1
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        with self._lock:
            self.loads += 1
        return cache

    def save(self, ids: Sequence[int], cache: Any) -> None:
        """Write `cache` (holding exactly `ids`) atomically, then trim the folder to its budget."""
        from safetensors.torch import save_file

        tensors, layers = {}, []
        for i, layer in enumerate(cache.layers):
            tensors[f"k{i}"], tensors[f"v{i}"] = layer.keys.contiguous(), layer.values.contiguous()
            saved: dict[str, Any] = {"kind": type(layer).__name__}
            if hasattr(layer, "cumulative_length"):
                saved["cumulative_length"] = int(layer.cumulative_length)
            layers.append(saved)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > self.limit_bytes:
            return
        path = self.path_for(ids)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            meta = {"identity": self._identity, "ids": json.dumps(list(ids)), "layers": json.dumps(layers)}
            save_file(tensors, str(temporary), metadata=meta)
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
            for path in self.folder.glob(f"*{SUFFIX}"):
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
