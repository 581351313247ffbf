"""A value built on first use, once, even when first asked for from several threads.

The one home of the double-checked lock (``if x is None: with lock: if x is None: x = build()``)::

    self._session = Lazy(self._open_session)
    ...
    session = self._session.get()  # built by the first caller; the others wait for it, then share it
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class Lazy(Generic[T]):
    """Holds what ``factory()`` returns, calling it at most once (unless it raises: then the next ``get`` tries again).

    Args:
        factory: builds the value.
        lock: the lock to build under (default: a lock of its own). Pass an owner's re-entrant lock when several
            lazy values of one object build each other and should be built under one lock.
    """

    __slots__ = ("_factory", "_lock", "_ready", "_value")

    def __init__(self, factory: Callable[[], T], lock: AbstractContextManager[Any] | None = None) -> None:
        self._factory = factory
        self._lock: AbstractContextManager[Any] = lock if lock is not None else threading.Lock()
        self._ready = False
        self._value: T | None = None

    def get(self) -> T:
        """The value, built now if this is the first call."""
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self._value = self._factory()
                    self._ready = True
        return cast(T, self._value)  # set above (T may itself allow None)

    def set(self, value: T) -> None:
        """Use ``value`` instead of building one (a session shared with a sibling, say)."""
        with self._lock:
            self._value, self._ready = value, True

    @property
    def loaded(self) -> bool:
        """Whether the value exists (built or set)."""
        return self._ready
