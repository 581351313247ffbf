"""Dynamic batching: concurrent requests merged into token-budget inference calls by one worker thread.

Request threads tokenize their own texts and :meth:`Batcher.submit` the token lists. The worker takes the oldest
job, adds every waiting job for the same encoder and outputs until ``merge_tokens`` tokens, and runs one
:meth:`~m3search.models.encoders.base.Encoder.encode_tokens` call (which sorts the merged inputs by length into the
encoder's own token-budget batches). One worker means one inference at a time: the ONNX session's threads
are never oversubscribed by concurrent requests. The queue is bounded: a full queue refuses new work with
:class:`~m3search.errors.OverloadedError` (the server's 429) instead of letting latency and memory grow.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from m3search.errors import M3SearchError, OverloadedError
from m3search.models.encoders.base import Encoder
from m3search.models.runtime.tokenize import Tokens
from m3search.types import Embedding, Output

# (texts, tokens, seconds) of one merged inference call; (jobs waiting) after each change of the queue.
BatchObserver = Callable[[int, int, float], None]
DepthObserver = Callable[[int], None]


@dataclass
class Job:
    """One request's share of the work."""

    encoder: Encoder
    tokens: Sequence[Tokens]
    outputs: frozenset[Output]
    future: Future[list[Embedding]] = field(default_factory=Future)

    @property
    def size(self) -> int:
        return sum(len(t.ids) for t in self.tokens)

    @property
    def key(self) -> tuple[int, frozenset[Output]]:
        return id(self.encoder), self.outputs


class Batcher:
    """A bounded queue of encode jobs and the worker thread that merges and runs them."""

    def __init__(self, *, max_queue: int, merge_tokens: int, on_batch: BatchObserver | None = None,
                 on_depth: DepthObserver | None = None) -> None:
        self.max_queue = max_queue
        self.merge_tokens = merge_tokens
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._waiting: deque[Job] = deque()
        self._running = 0  # jobs taken by the worker and not finished yet
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._seconds_per_token = 0.0  # measured; estimates Retry-After

    def start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._work, name="m3search-batcher", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Finish the jobs already queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    @property
    def depth(self) -> int:
        """Jobs queued or running."""
        with self._cond:
            return len(self._waiting) + self._running

    def submit(self, encoder: Encoder, tokens: Sequence[Tokens], outputs: frozenset[Output]
               ) -> Future[list[Embedding]]:
        """Queue one request's tokens; the future gets its embeddings in input order.

        Raises:
            OverloadedError: ``max_queue`` jobs are already queued or running.
        """
        job = Job(encoder, tokens, outputs)
        with self._cond:
            if self._thread is None:
                raise M3SearchError("the batcher is not running")
            queued = len(self._waiting) + self._running
            if queued >= self.max_queue:
                raise OverloadedError(queued, self._retry_after())
            self._waiting.append(job)
            self._cond.notify()
        self._report_depth()
        return job.future

    def _retry_after(self) -> int:
        waiting_tokens = sum(j.size for j in self._waiting)
        return max(1, round(waiting_tokens * self._seconds_per_token + 0.5))

    def _take(self) -> list[Job] | None:
        """The next merge: the oldest job and every waiting job of the same kind that fits the token budget."""
        with self._cond:
            while not self._waiting:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._waiting.popleft()
            group, budget = [first], self.merge_tokens - first.size
            for job in list(self._waiting):
                if job.key == first.key and job.size <= budget:
                    self._waiting.remove(job)
                    group.append(job)
                    budget -= job.size
            self._running = len(group)
            return group

    def _work(self) -> None:
        while (group := self._take()) is not None:
            self._report_depth()
            start = time.perf_counter()
            self._run(group)
            seconds = time.perf_counter() - start
            tokens = sum(j.size for j in group)
            if tokens:
                self._seconds_per_token = seconds / tokens
            with self._cond:
                self._running = 0
            self._report_depth()
            if self._on_batch is not None:
                self._on_batch(sum(len(j.tokens) for j in group), tokens, seconds)

    @staticmethod
    def _run(group: list[Job]) -> None:
        merged = [t for job in group for t in job.tokens]
        try:
            embeddings = group[0].encoder.encode_tokens(merged, group[0].outputs)
        except Exception as exc:  # delivered to the callers, who translate it
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            for job in group:  # one bad input must not fail the other requests: run each alone
                _settle(job)
            return
        offset = 0
        for job in group:
            job.future.set_result(embeddings[offset : offset + len(job.tokens)])
            offset += len(job.tokens)

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self.depth)


def _settle(job: Job) -> None:
    """Run one job alone and hand its result or its exception to its future."""
    try:
        job.future.set_result(job.encoder.encode_tokens(job.tokens, job.outputs))
    except Exception as exc:  # delivered to the caller, who translates it
        job.future.set_exception(exc)
