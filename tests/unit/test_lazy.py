"""The one double-checked lazy-load helper: built once across threads, retried after a failure, settable."""

from __future__ import annotations

import threading
import time

import pytest

from m3search.lazy import Lazy


def test_many_threads_share_one_build() -> None:
    calls: list[int] = []

    def build() -> object:
        calls.append(1)
        time.sleep(0.05)  # every thread arrives while the first is still building
        return object()

    lazy = Lazy(build)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(lazy.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(x) for x in seen}) == 1
    assert lazy.loaded


def test_a_failed_build_is_tried_again() -> None:
    attempts: list[int] = []

    def build() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("first try fails")
        return 7

    lazy = Lazy(build)
    with pytest.raises(OSError):
        lazy.get()
    assert not lazy.loaded
    assert lazy.get() == 7
    assert lazy.get() == 7 and len(attempts) == 2


def test_none_is_a_value_and_set_skips_the_factory() -> None:
    calls: list[int] = []
    lazy: Lazy[int | None] = Lazy(lambda: calls.append(1))  # type: ignore[func-returns-value]
    assert lazy.get() is None and lazy.get() is None
    assert calls == [1]  # None was kept, not rebuilt
    other = Lazy[str](lambda: pytest.fail("the factory must not run"))
    other.set("given")
    assert other.get() == "given"


def test_a_shared_reentrant_lock_lets_one_value_build_another() -> None:
    lock = threading.RLock()
    inner = Lazy(lambda: 2, lock)
    outer = Lazy(lambda: inner.get() + 1, lock)
    assert outer.get() == 3
