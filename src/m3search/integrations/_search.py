"""The two search backends behind the retrievers: a local :class:`~m3search.retrieval.search.Searcher`, and an
m3search server's ``POST /api/v1/search``. Both return :class:`~m3search.retrieval.types.SearchHit` lists with the
fused score, the metadata and each retriever's rank and score."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any, Protocol

from m3search.errors import InputError, RemoteError
from m3search.integrations._http import DEFAULT_TIMEOUT, ServerClient
from m3search.lazy import Lazy
from m3search.models.encoders.loader import load_encoder
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import ChunkMatch, Contribution, SearchHit, SearchRequest
from m3search.settings import Settings, get_settings
from m3search.store.base import CatalogStore
from m3search.store.urls import configured_store

SEARCH_PATH = "/api/v1/search"


class SearchBackend(Protocol):
    """What a retriever needs: the hits of one query, sync and async."""

    collection: str

    def search(self, query: str) -> list[SearchHit]:
        """The hits of ``query``, best first."""
        ...

    async def asearch(self, query: str) -> list[SearchHit]:
        """The same as :meth:`search`, without blocking the event loop."""
        ...

    def close(self) -> None:
        """Release what the backend opened (a store)."""
        ...


class LocalSearch:
    """Searches a collection in this process.

    Args:
        collection: the collection's name.
        request: strategy, k, filters, fusion parameters (default: hybrid, k=10).
        searcher: a ready Searcher (then ``db``, ``store_url`` and ``model`` are not used).
        db: the SQLite index file (default: ``M3SEARCH_DB``); opened on the first search.
        store_url: a store URL instead (``qdrant+edge:///dir``, ``http://host:6333``).
        model: the query model (default: the model the collection was built with).
        settings: explicit settings (default: read from the environment on first use).
    """

    def __init__(self, collection: str, *, request: SearchRequest | None = None, searcher: Searcher | None = None,
                 db: str | Path | None = None, store_url: str | None = None, model: str | None = None,
                 settings: Settings | None = None) -> None:
        self.collection = collection
        self.request, _ = (request or SearchRequest()).checked()  # a bad k or strategy fails here
        self._db = Path(db) if db is not None else None
        self._store_url, self._model, self._settings = store_url, model, settings
        self._opened: CatalogStore | None = None
        self._lock = threading.RLock()  # re-entrant: close() resets the searcher under it
        self._searcher = Lazy(self._open, self._lock)
        if searcher is not None:
            self._searcher.set(searcher)

    @property
    def searcher(self) -> Searcher:
        """The Searcher (the store opens and the collection's model is chosen on first use)."""
        return self._searcher.get()

    def _open(self) -> Searcher:
        cfg = self._settings or get_settings()
        store = configured_store(cfg, db=self._db, url=self._store_url)
        try:
            model = self._model or store.active_set(self.collection).config.model
            encoder = load_encoder(model, settings=cfg)
        except BaseException:
            store.close()
            raise
        self._opened = store
        return Searcher(store, encoder)

    def search(self, query: str) -> list[SearchHit]:
        return self.searcher.search(self.collection, query, self.request).hits

    async def asearch(self, query: str) -> list[SearchHit]:
        return await asyncio.to_thread(self.search, query)

    def close(self) -> None:
        """Close the store this backend opened (not one of a Searcher it was given)."""
        with self._lock:
            if self._opened is not None:
                self._opened.close()
                self._opened = None
                self._searcher.reset()


class RemoteSearch:
    """Searches a collection of an m3search server (``POST /api/v1/search``); errors as in
    :class:`~m3search.integrations._http.ServerClient`.

    Args:
        base_url: the server's URL.
        collection: the collection's name.
        request: strategy, k, filters, fusion parameters (default: hybrid, k=10), sent as the request body.
        api_key: the server's API key.
        timeout: seconds per request.
        extra: the extra that carries httpx here.
    """

    def __init__(self, base_url: str, collection: str, *, request: SearchRequest | None = None,
                 api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT, extra: str = "llm") -> None:
        self.collection = collection
        self.request, _ = (request or SearchRequest()).checked()
        self.client = ServerClient(base_url, api_key=api_key, timeout=timeout, extra=extra)

    def __repr__(self) -> str:
        return f"RemoteSearch(base_url={self.client.base_url!r}, collection={self.collection!r})"

    def search(self, query: str) -> list[SearchHit]:
        return self._hits(self.client.post(SEARCH_PATH, self._body(query)))

    async def asearch(self, query: str) -> list[SearchHit]:
        return self._hits(await self.client.apost(SEARCH_PATH, self._body(query)))

    def close(self) -> None:
        """Nothing to release: each call opens and closes its own connection."""

    def _body(self, query: str) -> dict[str, Any]:
        fields = {f.name: getattr(self.request, f.name) for f in dataclasses.fields(self.request)}
        body = {name: (dict(value) if name == "weights" else value) for name, value in fields.items()
                if value is not None}
        return {**body, "q": query, "collection": self.collection}

    def _hits(self, body: Any) -> list[SearchHit]:
        try:
            return [SearchHit(document_id=str(hit["document_id"]), chunk_id=int(hit["chunk_id"]),
                              score=float(hit["score"]), text=str(hit["text"]), metadata=dict(hit["metadata"]),
                              breakdown={name: Contribution(int(c["rank"]), float(c["score"]))
                                         for name, c in hit.get("breakdown", {}).items()},
                              ordinal=hit.get("ordinal"), start=hit.get("start"), end=hit.get("end"),
                              other_chunks=_matches(hit.get("other_chunks")))
                    for hit in body["hits"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"m3search server {self.client.base_url} answered something that is not a search "
                              f"result") from exc


def _matches(items: Any) -> tuple[ChunkMatch, ...] | None:
    """A document hit's other matching chunks from a server's answer (None: a chunk hit, or an older server)."""
    if items is None:
        return None
    return tuple(ChunkMatch(int(c["chunk_id"]), c.get("ordinal"), c.get("start"), c.get("end"), float(c["score"]))
                 for c in items)


def search_request(strategy: str, k: int, filters: dict[str, Any] | None, options: dict[str, Any]) -> SearchRequest:
    """A checked :class:`SearchRequest`; ``options`` are its other fields (``rrf_k``, ``weights``, ``rerank``...)."""
    known = {f.name for f in dataclasses.fields(SearchRequest)} - {"strategy", "k", "filters"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown search option(s) {', '.join(unknown)}; use {', '.join(sorted(known))}")
    request, _ = SearchRequest(strategy, k, filters, **options).checked()  # type: ignore[arg-type]
    return request


def search_backend(collection: str, request: SearchRequest, *, base_url: str | None, api_key: str | None,
                   timeout: float, searcher: Searcher | None, db: str | Path | None, store_url: str | None,
                   model: str | None, extra: str) -> LocalSearch | RemoteSearch:
    """A :class:`RemoteSearch` when ``base_url`` is given, else a :class:`LocalSearch`."""
    if base_url is not None:
        return RemoteSearch(base_url, collection, request=request, api_key=api_key, timeout=timeout, extra=extra)
    return LocalSearch(collection, request=request, searcher=searcher, db=db, store_url=store_url, model=model)
