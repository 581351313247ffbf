"""Locks by key (a path, a name) for the threads of one process, kept only while someone holds or waits for them.

A plain ``dict[key, Lock]`` grows by one lock per key ever used and is never emptied; :class:`KeyedLocks` counts
the holders and waiters of each key and drops its lock when the last one leaves, so it holds at most one lock per
key in use: nothing to close, nothing to leak.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager


class KeyedLocks:
    """One mutual-exclusion lock per key, created on demand and dropped when unused (thread-safe)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        """Hold the lock of ``key`` for the ``with`` block (waiting for another thread holding it)."""
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        """How many keys are held or waited for now."""
        with self._guard:
            return len(self._locks)
