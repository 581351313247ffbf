"""Keyed locks: one holder per key at a time, keys independent, and nothing kept once a key is no longer in use."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from m3search.locks import KeyedLocks
from m3search.models.prepare import cache


def test_one_holder_per_key_and_keys_are_independent() -> None:
    locks = KeyedLocks()
    inside: list[int] = []
    most = [0]

    def work() -> None:
        with locks.hold("a"):
            inside.append(1)
            most[0] = max(most[0], len(inside))
            time.sleep(0.02)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(5)]
    for t in threads:
        t.start()
    with locks.hold("b"):  # another key is free while "a" is busy
        pass
    for t in threads:
        t.join()
    assert most[0] == 1
    assert len(locks) == 0


def test_a_key_is_dropped_when_its_last_user_leaves_even_on_error() -> None:
    locks = KeyedLocks()
    try:
        with locks.hold("k"):
            assert len(locks) == 1
            raise ValueError
    except ValueError:
        pass
    assert len(locks) == 0
    with locks.hold("k"):  # usable again
        pass


def test_the_prepare_cache_keeps_no_lock_per_path_ever_used(tmp_path: Path) -> None:
    for i in range(50):
        with cache.lock_for(tmp_path / f"model-{i}"):
            pass
    assert len(cache._PATH_LOCKS) == 0
