"""Values built on first use, once, even when first asked for from several threads.

The one home of the double-checked lock (``if x is None: with lock: if x is None: x = build()``)::

    self._session = Lazy(self._open_session)
    ...
    session = self._session.get()  # built by the first caller; the others wait for it, then share it

and of its keyed form (``if key not in d: with lock: if key not in d: d[key] = build(key)``)::

    self._truncated = LazyMap(self._truncate)  # one value per key, e.g. per Matryoshka dimension
    small = self._truncated.get(256)
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET  # "not built": a value of its own, so that None can be a built value


def _lock_or_own(lock: AbstractContextManager[Any] | None) -> AbstractContextManager[Any]:
    return lock if lock is not None else threading.Lock()


class Lazy(Generic[T]):
    """Holds what ``factory()`` returns, calling it at most once (unless it raises: then the next ``get`` tries again).

    Args:
        factory: builds the value.
        lock: the lock to build under (default: a lock of its own). Pass an owner's re-entrant lock when several
            lazy values of one object build each other and should be built under one lock, or when the owner
            calls :meth:`reset` while holding its lock.
    """

    __slots__ = ("_factory", "_lock", "_value")

    def __init__(self, factory: Callable[[], T], lock: AbstractContextManager[Any] | None = None) -> None:
        self._factory = factory
        self._lock = _lock_or_own(lock)
        self._value: T | _Unset = _UNSET  # one attribute: a reader never sees half of a set or reset

    def get(self) -> T:
        """The value, built now if this is the first call."""
        value = self._value
        if isinstance(value, _Unset):
            with self._lock:
                value = self._value
                if isinstance(value, _Unset):
                    value = self._value = self._factory()
        return value

    def set(self, value: T) -> None:
        """Use ``value`` instead of building one (a session shared with a sibling, say)."""
        with self._lock:
            self._value = value

    def reset(self) -> None:
        """Forget the value (after closing it, say): the next ``get`` builds it again."""
        with self._lock:
            self._value = _UNSET

    def peek(self) -> T | None:
        """The value if it exists (built or set), else None; never builds."""
        value = self._value
        return None if isinstance(value, _Unset) else value

    @property
    def loaded(self) -> bool:
        """Whether the value exists (built or set)."""
        return not isinstance(self._value, _Unset)


class LazyMap(Generic[K, V]):
    """One value per key, built by ``factory(key)`` on the key's first ``get``, once across threads (unless it
    raises: then the next ``get`` of that key tries again). Values are never dropped: keep the keys few.

    Args:
        factory: builds the value of a key.
        lock: the lock to build under (default: a lock of its own); pass an owner's re-entrant lock when the
            factory uses the owner's other lazy values.
    """

    __slots__ = ("_factory", "_lock", "_values")

    def __init__(self, factory: Callable[[K], V], lock: AbstractContextManager[Any] | None = None) -> None:
        self._factory = factory
        self._lock = _lock_or_own(lock)
        self._values: dict[K, V] = {}

    def get(self, key: K) -> V:
        """The value of ``key``, built now if this is the key's first call."""
        value: V | _Unset = self._values.get(key, _UNSET)
        if isinstance(value, _Unset):
            with self._lock:
                value = self._values.get(key, _UNSET)
                if isinstance(value, _Unset):
                    value = self._values[key] = self._factory(key)
        return value
