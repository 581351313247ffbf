"""The one double-checked lazy-load helper: built once across threads, retried after a failure, settable."""

from __future__ import annotations

import threading
import time

import pytest

from m3search.lazy import Lazy, LazyMap


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


def test_reset_forgets_and_peek_never_builds() -> None:
    built: list[object] = []
    lazy = Lazy(lambda: built.append(object()) or built[-1])
    assert lazy.peek() is None and built == []  # peeking builds nothing
    first = lazy.get()
    assert lazy.peek() is first
    lazy.reset()
    assert not lazy.loaded and lazy.peek() is None
    second = lazy.get()
    assert second is not first and len(built) == 2


def test_a_reset_under_the_owners_reentrant_lock() -> None:
    lock = threading.RLock()
    lazy = Lazy(object, lock)
    lazy.get()
    with lock:  # an owner closing what it built, then forgetting it
        lazy.reset()
    assert not lazy.loaded


def test_lazy_map_builds_each_key_once_across_threads() -> None:
    calls: list[int] = []

    def build(key: int) -> list[int]:
        calls.append(key)
        time.sleep(0.05)
        return [key]

    values = LazyMap(build)
    seen: list[list[int]] = []
    threads = [threading.Thread(target=lambda k=k: seen.append(values.get(k % 2))) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [0, 1]
    assert len({id(x) for x in seen}) == 2
    assert values.get(0) == [0] and values.get(0) is values.get(0)


def test_lazy_map_retries_a_failed_key_and_keeps_none() -> None:
    attempts: list[str] = []

    def build(key: str) -> str | None:
        attempts.append(key)
        if key == "bad" and attempts.count("bad") == 1:
            raise KeyError("first try fails")
        return None if key == "none" else key

    values = LazyMap(build)
    with pytest.raises(KeyError):
        values.get("bad")
    assert values.get("bad") == "bad"
    assert values.get("none") is None and values.get("none") is None
    assert attempts == ["bad", "bad", "none"]


def test_lazy_map_factory_may_use_the_owners_other_lazy_values() -> None:
    lock = threading.RLock()
    base = Lazy(lambda: [1, 2, 3, 4], lock)
    heads = LazyMap(lambda n: base.get()[:n], lock)
    assert heads.get(2) == [1, 2] and base.loaded
