"""KV caches kept between turns, so a reply starts about as fast on turn 10 as on turn 1.

Two kinds of entry share one LRU bounded in bytes:
- a conversation's cache after its last reply, with the token ids it holds. The next prompt of that
  conversation normally starts with exactly those ids: only the new tokens are prefilled.
- a character prefix snapshot (instruction + sheet images, their soft tokens already encoded). Gemma
  3's sliding-window layers cannot be cropped back, so whenever the exact-prefix test fails
  (regenerate, an edited message, context trimming, eviction) or a new conversation starts, a copy
  of the snapshot is the starting point and the vision tower is not run again.

A cache is only ever reused when the new prompt's token ids begin with the ids it holds, so a
reply with the cache is the reply without it. Prefix snapshots are also written to disk
(`core.model.backends.gemma.prefix_disk`) when one is given, and read back after a restart.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.model.backends.gemma.prefix_disk import PrefixDisk

MB = 2**20


def cache_bytes(cache: Any) -> int:
    """Memory held by a transformers cache's key/value tensors."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, "nbytes"):
                total += int(tensor.nbytes)
    return total


def default_limit_mb(device: str) -> int:
    return 4096 if device == "cuda" else 1024


@dataclass(frozen=True)
class Start:
    """Where a reply's prefill starts. `cache` None: a fresh cache; then, if `snapshot_end`, prefill
    tokens [0, snapshot_end) first and hand that cache to `keep_prefix` (the character's snapshot)."""

    cache: Any
    cached: int  # prompt tokens the cache already holds
    source: str  # "conversation" | "prefix" | "saved" (a prefix read from disk) | "cold"
    snapshot_end: int = 0


@dataclass
class _Entry:
    ids: list[int]
    cache: Any
    nbytes: int


class KVStore:
    """Conversation caches and character-prefix snapshots in one byte-bounded LRU."""

    def __init__(self, limit_bytes: int, disk: PrefixDisk | None = None, device: str = "cpu") -> None:
        self.limit_bytes = limit_bytes
        self.disk, self.device = disk, device
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.prefix_hits = self.misses = self.evictions = 0
        self._writer: threading.Thread | None = None

    # -- what the engine calls ------------------------------------------------------------------
    def start(
        self, ids: Sequence[int], conversation_key: str | None, prefix_key: str, prefix_ids: Sequence[int]
    ) -> Start:
        """The best starting point for a prompt of token `ids` whose character prefix is `prefix_ids`."""
        ids = list(ids)
        usable = len(ids) - 1  # generate() always feeds the last prompt token itself
        if conversation_key:
            entry = self._take(conversation_key)  # in use now; `remember` puts it back
            if entry and len(entry.ids) <= usable and ids[: len(entry.ids)] == entry.ids:
                self._count("hits")
                return Start(entry.cache, len(entry.ids), "conversation")
        snapshot = self._peek("prefix:" + prefix_key)
        if snapshot and len(snapshot.ids) <= usable and ids[: len(snapshot.ids)] == snapshot.ids:
            self._count("prefix_hits")
            return Start(copy.deepcopy(snapshot.cache), len(snapshot.ids), "prefix")
        end = len(prefix_ids) - 1  # the prefix up to (not including) its last token
        if 0 < end <= usable and ids[:end] == list(prefix_ids[:end]):
            saved = self.disk.load(ids[:end], self.device) if self.disk is not None else None
            if saved is not None:  # made before a restart, or by a warm-up
                self._put("prefix:" + prefix_key, _Entry(ids[:end], saved, cache_bytes(saved)))
                self._count("prefix_hits")
                return Start(copy.deepcopy(saved), end, "saved")
            self._count("misses")
            return Start(None, 0, "cold", snapshot_end=end)
        self._count("misses")
        return Start(None, 0, "cold")

    def has_prefix(self, prefix_key: str, ids: Sequence[int]) -> bool:
        """Whether a snapshot of exactly `ids` is kept, in memory or on disk (a warm-up's question)."""
        entry = self._peek("prefix:" + prefix_key)
        if entry is not None and entry.ids == list(ids):
            return True
        return self.disk is not None and self.disk.path_for(ids).is_file()

    def keep_prefix(self, prefix_key: str, ids: Sequence[int], cache: Any) -> None:
        """Keep a copy of a freshly prefilled character prefix for later conversations (and on disk,
        written by a background thread so the reply does not wait for it)."""
        kept = copy.deepcopy(cache)  # never changed afterwards: starts are copies of it
        self._put("prefix:" + prefix_key, _Entry(list(ids), kept, cache_bytes(kept)))
        if self.disk is not None:
            previous = self._writer
            self._writer = threading.Thread(target=self._save, args=(previous, list(ids), kept), daemon=True)
            self._writer.start()

    def _save(self, previous: threading.Thread | None, ids: list[int], cache: Any) -> None:
        if previous is not None:
            previous.join()  # one write at a time, in order
        assert self.disk is not None
        self.disk.save(ids, cache)

    def flush(self) -> None:
        """Wait for snapshots still being written to disk (tests, and before a process ends)."""
        if self._writer is not None:
            self._writer.join()

    def remember(self, conversation_key: str | None, ids: list[int], cache: Any) -> None:
        """Keep a conversation's cache after a reply (ids: everything the cache holds)."""
        if conversation_key:
            self._put(conversation_key, _Entry(ids, cache, cache_bytes(cache)))

    def forget(self, conversation_key: str) -> None:
        self._take(conversation_key)

    # -- reporting ------------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        with self._lock:
            used = sum(e.nbytes for e in self._entries.values())
            return {
                "entries": len(self._entries),
                "hits": self.hits,
                "prefix_hits": self.prefix_hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "bytes": used,
                "megabytes": f"{used / MB:.1f}",
                "limit_mb": f"{self.limit_bytes / MB:.0f}",
                **(self.disk.report() if self.disk is not None else {"disk_loads": 0, "disk_saves": 0}),
            }

    # -- the LRU --------------------------------------------------------------------------------
    def _put(self, key: str, entry: _Entry) -> None:
        with self._lock:
            self._entries.pop(key, None)
            if entry.nbytes > self.limit_bytes:
                self.evictions += 1
                return
            self._entries[key] = entry
            while sum(e.nbytes for e in self._entries.values()) > self.limit_bytes:
                self._entries.popitem(last=False)
                self.evictions += 1

    def _take(self, key: str) -> _Entry | None:
        with self._lock:
            return self._entries.pop(key, None)

    def _peek(self, key: str) -> _Entry | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries
