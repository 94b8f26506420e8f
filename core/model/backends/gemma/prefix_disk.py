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

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.model.backends.prefix_files import PrefixFiles

SUFFIX = ".kv.safetensors"


class PrefixDisk(PrefixFiles):
    """Prefix KV snapshots (safetensors) in `folder`, at most `limit_bytes` of them, for the model `identity`."""

    suffix = SUFFIX

    def __init__(self, folder: Path, limit_bytes: int, identity: dict[str, str], new_cache: Callable[[], Any]):
        super().__init__(folder, limit_bytes, identity)
        self._new_cache = new_cache

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
            self.drop(path, exc)
            return None
        self.used(path)
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
        meta = {"identity": self._identity, "ids": json.dumps(list(ids)), "layers": json.dumps(layers)}
        self.write(self.path_for(ids), lambda temporary: save_file(tensors, str(temporary), metadata=meta))
