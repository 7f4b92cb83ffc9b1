"""A least-recently-used cache bounded in bytes as well as entries, for caches keyed by outside input.

``functools.lru_cache`` bounds the number of entries only. Where the key or the value is as large
as what a client sent (a pod's annotations, a pod's spec), 1,024 entries of 1 MB annotations are
a gigabyte: the webhook once reached 1 GiB that way (issue 8). :class:`BoundedCache` counts the
bytes the caller says each entry holds, evicts the least recently used entries past ``max_bytes``,
and never stores an entry over ``max_entry_bytes``: such a value is too large to be a template
that other pods share, so caching it would only push out the entries that are.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """Least recently used out, past ``max_entries`` entries or ``max_bytes`` bytes (thread-safe).

    Values are stored as given and handed out as they are: callers must not change them.
    """

    def __init__(self, *, max_entries: int, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        """Entries larger than this are not stored (see the module's docstring)."""
        self.hits = self.misses = 0
        self.bytes = 0
        """What the stored entries hold, as their callers measured it."""
        self._entries: collections.OrderedDict[K, tuple[V, int]] = collections.OrderedDict()
        self._lock = threading.Lock()  # the webhook answers on its event loop; tests may call from threads

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Store ``value`` under ``key``, ``size`` being the bytes the two hold; False if it is too large."""
        if size > self.max_entry_bytes:
            return False
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self.bytes -= previous[1]
            self._entries[key] = (value, size)
            self.bytes += size
            while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0
