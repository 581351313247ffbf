"""What searches keep between calls, owned by one object with a ``close()``: the in-memory indexes of embedding
sets (:class:`~m3search.retrieval.memory.IndexCache`), the threads that run a fusion's first stages side by side,
and the loaded cross-encoders of the rerank stage.

A :class:`~m3search.retrieval.search.Searcher` given no runtime uses the process-wide default
(:func:`default_runtime`); a server owns its own and closes it at shutdown.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from m3search.retrieval.memory import IndexCache


class Scorer(Protocol):
    """A cross-encoder: one relevance score per passage, in input order (higher is better)."""

    @property
    def name(self) -> str: ...

    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...


ScorerKey = tuple[str, str, str, int]  # reranker, home, precision, threads


class RetrievalRuntime:
    """The caches and threads of searches. Everything is made on first use; :meth:`close` shuts the threads down
    and drops the caches, and a later search makes them again (so closing the process-wide default is safe)."""

    def __init__(self, *, index_capacity: int = 4, workers: int = 2) -> None:
        self.indexes = IndexCache(index_capacity)
        self.scorers: dict[ScorerKey, Scorer] = {}
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def pool(self) -> ThreadPoolExecutor:
        """The threads that run a fusion's retrievers side by side (HNSW and sparse products leave the GIL)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="m3search-retrieve")
            return self._pool

    def close(self) -> None:
        """Shut the threads down (after the searches running on them) and drop the indexes and cross-encoders."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.indexes.clear()
        self.scorers.clear()

    def __enter__(self) -> RetrievalRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEFAULT: list[RetrievalRuntime] = []
_DEFAULT_LOCK = threading.Lock()


def default_runtime() -> RetrievalRuntime:
    """The process-wide runtime of searches that were given none (made on first use)."""
    with _DEFAULT_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(RetrievalRuntime())
        return _DEFAULT[0]
