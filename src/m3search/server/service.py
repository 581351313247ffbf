"""What one server holds: settings, store, encoders, batcher, metrics, background jobs; and the embedding path
every route shares (validate, tokenize in a worker thread, queue for the batcher, await)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
from starlette.concurrency import run_in_threadpool

from m3search.errors import InputError, OverloadedError, PayloadTooLargeError
from m3search.ingest.pipeline import EmbedFn
from m3search.models.encoders.base import Encoder, Kind, l2_normalize, stack_dense
from m3search.models.runtime.tokenize import Tokens
from m3search.retrieval.runtime import RetrievalRuntime
from m3search.server.batching import Batcher
from m3search.server.engines import EncoderPool
from m3search.server.jobs import Jobs
from m3search.server.metrics import Metrics
from m3search.settings import Settings
from m3search.store.base import CatalogStore
from m3search.store.types import EmbeddingSet
from m3search.types import Embedding, FloatArray, OnOverflow, Output

OVERLOAD_WAIT_S = 0.05  # background jobs retry a full queue after this long (they never get a 429)


class Service:
    """The state behind every route (``app.state.service``)."""

    def __init__(self, settings: Settings, pool: EncoderPool, store: CatalogStore, metrics: Metrics) -> None:
        self.settings = settings
        self.pool = pool
        self.store = store
        self.metrics = metrics
        self.batcher = Batcher(max_queue=settings.max_queue, merge_tokens=settings.merge_tokens,
                               on_batch=self.metrics.observe_batch, on_depth=self.metrics.queue_depth.set)
        self.jobs = Jobs()
        self.runtime = RetrievalRuntime()  # set indexes, retrieval threads, cross-encoders: closed by stop()

    def start(self) -> None:
        self.batcher.start()

    def stop(self) -> None:
        self.jobs.stop_all()
        self.batcher.stop()
        self.pool.close()
        self.runtime.close()
        self.store.close()

    def check_texts(self, texts: Sequence[str]) -> None:
        """Refuse too many inputs (413), non-strings and empty or whitespace-only texts (400)."""
        if len(texts) > self.settings.max_inputs:
            raise PayloadTooLargeError(f"{len(texts)} inputs in one request; the limit is {self.settings.max_inputs} "
                                       f"(M3SEARCH_MAX_INPUTS): split the request")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {index} is not a string")
            if not text.strip():
                raise InputError(f"input {index} is empty or whitespace only")

    async def embed(self, encoder: Encoder, texts: Sequence[str], *, outputs: Sequence[Output],
                    kind: Kind | None = None, max_length: int | None = None, on_overflow: OnOverflow = "truncate",
                    route: str = "") -> tuple[list[Embedding], int]:
        """Embeddings of ``texts`` through the batcher, and the number of tokens the model saw."""
        self.check_texts(texts)
        wanted = encoder.check_outputs(outputs)  # before queueing: a bad request never reaches the worker
        tokens = await run_in_threadpool(lambda: encoder.tokenize(texts, kind=kind, max_length=max_length,
                                                                  on_overflow=on_overflow))
        embeddings = await asyncio.wrap_future(self._submit(encoder, tokens, wanted, retry=False))
        self.pool.mark_warm(encoder.spec.name)
        count = sum(len(t.ids) for t in tokens)
        self.metrics.tokens.labels(route=route).inc(count)
        return embeddings, count

    def embed_fn(self, encoder: Encoder, *, wait: bool) -> EmbedFn:
        """Document embedding through the batcher, for ingestion in a worker thread.

        ``wait=False`` (request threads) lets a full queue answer 429; ``wait=True`` (background jobs) retries.
        """

        def embed(texts: Sequence[str], outputs: Sequence[Output], max_length: int) -> list[Embedding]:
            tokens = encoder.tokenize(texts, kind="document", max_length=max_length)
            return self._submit(encoder, tokens, frozenset(outputs), retry=wait).result()

        return embed

    def _submit(self, encoder: Encoder, tokens: Sequence[Tokens], outputs: frozenset[Output], *, retry: bool
                ) -> Future[list[Embedding]]:
        """Queue for the batcher; a full queue is a 429 (counted), or with ``retry`` a short wait and again."""
        while True:
            try:
                return self.batcher.submit(encoder, tokens, outputs)
            except OverloadedError:
                if not retry:
                    self.metrics.rejected.inc()
                    raise
                time.sleep(OVERLOAD_WAIT_S)

    def encoder_for_set(self, target: EmbeddingSet) -> Encoder:
        """The encoder that made ``target``'s vectors (same model, dimension and precision)."""
        config = target.config
        return self.pool.get(config.model, dim=config.truncate_dim, precision=config.quantization)


def dense_rows(embeddings: Sequence[Embedding], dim: int, normalize: bool) -> FloatArray:
    """The dense vectors as one matrix, cut to ``dim`` (checked with the model's ``check_dim`` by the caller) and
    L2-normalised if asked (after the cut), as the encoder does for a Matryoshka dimension."""
    matrix = stack_dense(embeddings)[:, :dim]
    return l2_normalize(matrix) if normalize else np.ascontiguousarray(matrix)
