"""The one search call: every strategy over a collection's active set, each hit with its score breakdown."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from m3search.errors import ConfigError, InputError, UnknownModelError
from m3search.ingest.pipeline import config_for
from m3search.limits import MAX_QUERY_CHARS
from m3search.models.encoders.base import Encoder
from m3search.models.encoders.images import ImageInput
from m3search.models.registry import ModelSpec, get_spec
from m3search.retrieval.defaults import hybrid_request, hybrid_settings, saved_fusion
from m3search.retrieval.engine import ENGINE_STRATEGIES, EngineContext
from m3search.retrieval.grouping import search_documents
from m3search.retrieval.memory import IndexCache, check_query_dim
from m3search.retrieval.rerank import RerankerPool, rerank_result
from m3search.retrieval.runtime import RetrievalRuntime, default_runtime
from m3search.retrieval.strategies import (
    STRATEGY_FUNCTIONS,
    Context,
    Outcome,
    fusion_retrievers,
    required_outputs,
    retrievers_of,
)
from m3search.retrieval.types import Contribution, SearchHit, SearchRequest, SearchResult, check_strategy
from m3search.settings import get_settings
from m3search.store.base import Store, in_engine
from m3search.store.filters import Scalar
from m3search.store.types import EmbeddingSet
from m3search.types import Embedding

CheckedRequest = tuple[SearchRequest, dict[str, list[Scalar]]]


def check_request(request: SearchRequest, rerankers: RerankerPool) -> CheckedRequest:
    """``request`` validated with its reranker's settings, before any model loads: the request and its normalised
    filters (:meth:`SearchRequest.checked`); :class:`InputError` or :class:`ConfigError` otherwise."""
    request, filters = request.checked()
    if request.rerank is not None:
        rerankers.check(request.rerank)
    return request, filters


def check_image_request(request: SearchRequest) -> CheckedRequest:
    """An image query's ``request`` validated: the ``dense`` strategy only, and no rerank."""
    request, filters = request.checked()
    if request.strategy != "dense":
        raise InputError(f"image queries search dense vectors only: use strategy 'dense', not '{request.strategy}'")
    if request.rerank is not None:
        raise InputError("image queries cannot be reranked (rerankers score a text query against text): "
                         "leave out rerank")
    return request, filters


class Searcher:
    """Searches the collections of ``store``; ``encoder`` embeds queries (it must be the collection's model).

    Without an encoder only pre-computed query embeddings (:meth:`search_embedded`) and ``bm25`` work; ``spec``
    then names the model facts (Matryoshka dimensions) when the registry does not know the collection's model.
    ``rerankers`` provides the rerank stage's models (default: the runtime's, with settings read when first needed).
    ``runtime`` holds what searches keep between calls: set indexes, threads, cross-encoders (default: the
    process-wide one); ``cache`` replaces its set indexes.
    """

    def __init__(self, store: Store, encoder: Encoder | None = None, *, spec: ModelSpec | None = None,
                 ann_threshold: int | None = None, ann_dir: Path | None = None, cache: IndexCache | None = None,
                 rerankers: RerankerPool | None = None, runtime: RetrievalRuntime | None = None) -> None:
        self.store = store
        self.encoder = encoder
        self.spec = spec or (encoder.spec if encoder is not None else None)
        # Reading the environment costs ~2 ms: only when the caller (a server, per request) did not say.
        self.ann_threshold = get_settings().ann_threshold if ann_threshold is None else ann_threshold
        self.ann_dir = ann_dir if ann_dir is not None else store.ann_dir
        self.runtime = runtime or default_runtime()
        self._cache = cache or self.runtime.indexes
        self._rerankers = rerankers

    @property
    def rerankers(self) -> RerankerPool:
        """The rerankers of the rerank stage (settings read on first use)."""
        if self._rerankers is None:
            self._rerankers = RerankerPool(cache=self.runtime.scorers)
        return self._rerankers

    def _target(self, collection: str) -> EmbeddingSet:
        active = self.store.active_set(collection)
        if self.encoder is not None:
            config = config_for(self.encoder, [o for o in self.encoder.spec.outputs if o in active.config.outputs])
            self.store.check_model(collection, config)  # a query of another model never searches these vectors
        return active

    def encode_queries(self, collection: str, texts: Sequence[str], strategies: Sequence[str]
                       ) -> list[Embedding | None]:
        """Query embeddings with every output ``strategies`` need, in one pass (None each if only bm25)."""
        return self._encode(self._target(collection), texts, strategies)

    def _encode(self, target: EmbeddingSet, texts: Sequence[str], strategies: Sequence[str]
                ) -> list[Embedding | None]:
        needed: set[str] = set()
        for strategy in strategies:
            check_strategy(strategy)
            needed.update(required_outputs(strategy, target))
        if not needed:
            return [None] * len(texts)
        if self.encoder is None:
            raise ConfigError(f"strategies {', '.join(strategies)} embed the query: give the Searcher an encoder")
        outputs = [o for o in ("dense", "sparse", "colbert") if o in needed]
        return list(self.encoder.encode_queries(list(texts), outputs=outputs))

    def search(self, collection: str, query: str, request: SearchRequest | None = None) -> SearchResult:
        """Search ``collection`` for ``query`` (embedded here with the collection's model)."""
        request = request or SearchRequest()
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise InputError(f"the query has {len(query)} characters, more than {MAX_QUERY_CHARS}")
        start = time.perf_counter()
        request, filters = check_request(request, self.rerankers)  # before the model loads
        target = self._target(collection)
        embedding = self._encode(target, [query], [request.strategy])[0]
        result = self._search(target, query, embedding, request, filters)
        return replace(result, took_ms=(time.perf_counter() - start) * 1000)

    def search_image(self, collection: str, image: ImageInput, request: SearchRequest | None = None) -> SearchResult:
        """Image->image: ``image`` (a path, encoded bytes or a uint8 array) embedded by the collection's image model
        (CLIP's vision tower) and searched by the ``dense`` strategy (the default here; others are refused)."""
        start = time.perf_counter()
        checked = check_image_request(request or SearchRequest(strategy="dense"))
        return self.search_image_checked(collection, image, checked, start=start)

    def search_image_checked(self, collection: str, image: ImageInput, checked: CheckedRequest, *,
                             start: float | None = None) -> SearchResult:
        """:meth:`search_image` with a request :func:`check_image_request` validated already."""
        start = time.perf_counter() if start is None else start
        request, filters = checked
        if self.encoder is None or not self.encoder.embeds_images:
            raise ConfigError("image queries need an image model (CLIP) as the Searcher's encoder: the model of an "
                              "image collection, e.g. clip-vit-b-32")
        target = self._target(collection)
        embedding: Embedding = self.encoder.encode_images([image])[0]
        result = self._search(target, "", embedding, request, filters)
        return replace(result, took_ms=(time.perf_counter() - start) * 1000)

    def _mrl_dims(self, target: EmbeddingSet) -> tuple[int, ...]:
        if self.spec is not None:
            return self.spec.mrl_dims
        try:  # the registry alone: local (fine-tuned) models never keep Matryoshka dims, and no file is read per search
            return get_spec(target.config.model).mrl_dims
        except UnknownModelError:
            return ()

    def search_embedded(self, collection: str, text: str, embedding: Embedding | None,
                        request: SearchRequest | None = None) -> SearchResult:
        """Search with a query embedding computed beforehand (``text`` serves bm25)."""
        start = time.perf_counter()
        return self.search_checked(collection, text, embedding, check_request(request or SearchRequest(),
                                                                             self.rerankers), start=start)

    def search_checked(self, collection: str, text: str, embedding: Embedding | None, checked: CheckedRequest, *,
                       start: float | None = None) -> SearchResult:
        """:meth:`search_embedded` with a request :func:`check_request` validated already (a server validates
        before it embeds the query, and only then)."""
        start = time.perf_counter() if start is None else start
        request, filters = checked
        result = self._search(self._target(collection), text, embedding, request, filters)
        return replace(result, took_ms=(time.perf_counter() - start) * 1000)

    def _search(self, target: EmbeddingSet, text: str, embedding: Embedding | None, request: SearchRequest,
                filters: dict[str, list[Scalar]]) -> SearchResult:
        if request.group_by == "document":  # grouped after fusion and rerank, deep enough for k documents
            chunks = replace(request, group_by="chunk")
            return search_documents(lambda depth: self._search(
                target, text, embedding, replace(chunks, k=depth, rerank_k=max(chunks.rerank_k, depth)), filters),
                request)
        if request.rerank is not None:  # the first stage finds rerank_k candidates; the reranker keeps k
            first = self._search(target, text, embedding, replace(request, k=request.rerank_k, rerank=None), filters)
            return rerank_result(first, text, request, self.rerankers)
        needed = required_outputs(request.strategy, target)
        if needed and (embedding is None or any(getattr(embedding, o) is None for o in needed)):
            raise InputError(f"strategy '{request.strategy}' needs the query's {', '.join(needed)} output(s)")
        if embedding is not None and embedding.dense is not None and "dense" in needed:
            check_query_dim(target, embedding.dense)
        tuned = None
        if request.strategy == "hybrid":  # left-out fusion fields: the collection's saved ones, else the defaults
            tuned = saved_fusion(self.store, target)
            request = hybrid_request(request, tuned, fusion_retrievers(target.config.outputs))
        if in_engine(self.store):  # Qdrant: the engine searches and filters
            engine = EngineContext(self.store, target, text, embedding, request, filters)
            outcome = ENGINE_STRATEGIES[request.strategy](engine)
        else:
            index = self._cache.get(self.store, target, self.ann_dir, self.ann_threshold)
            allowed = index.allowed(filters) if filters else None
            ctx = Context(self.store, target, index, text, embedding, request, filters, allowed,
                          self._mrl_dims(target), self.runtime.pool())
            outcome = STRATEGY_FUNCTIONS[request.strategy](ctx)
        details = {"k": request.k, **_parameters(request, target.config.outputs), **outcome.details}
        if tuned is not None:
            details["tuned"] = tuned.as_dict()  # the collection's saved fusion (fields the request gave win)
        return SearchResult(target.collection, request.strategy,
                            retrievers_of(request.strategy, target.config.outputs), self._hits(outcome, request.k,
                                                                                           target.collection),
                            details=details)

    def _hits(self, outcome: Outcome, k: int, collection: str) -> list[SearchHit]:
        positions = {name: {item: (rank, score) for rank, (item, score) in enumerate(ranking, start=1)}
                     for name, ranking in outcome.parts.items()}
        result = []
        for hit in self.store.hits(outcome.final[:k], collection):
            breakdown = {name: Contribution(*found[hit.chunk_id]) for name, found in positions.items()
                         if hit.chunk_id in found}
            result.append(SearchHit(hit.doc_id, hit.chunk_id, hit.score, hit.text, hit.metadata, breakdown,
                                    ordinal=hit.ordinal, start=hit.start, end=hit.end))
        return result


def _parameters(request: SearchRequest, outputs: tuple[str, ...]) -> dict[str, object]:
    """The request's parameters that shaped this strategy's result."""
    found: dict[str, object] = {"group_by": request.group_by}
    if request.strategy == "hybrid":
        names = fusion_retrievers(outputs)
        settings = hybrid_settings(request, names)
        found.update(settings.as_dict())
        found["weights"] = {n: float(settings.weights.get(n, 0.0)) for n in names}
    if request.strategy in ("hybrid", "weighted", "all", "colbert"):
        found["candidates"] = request.candidates
    return found
