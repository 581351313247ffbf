"""``GET|POST /api/v1/search``: every strategy of the library, with per-retriever score breakdowns."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from m3search.limits import MAX_CANDIDATES, MAX_K, MAX_QUERY_CHARS, MAX_RERANK_K
from m3search.retrieval.rerank import RerankerPool
from m3search.retrieval.search import Searcher, check_request
from m3search.retrieval.strategies import required_outputs
from m3search.retrieval.types import STRATEGIES, SearchRequest, check_strategy
from m3search.server.routes.common import ERRORS, json_response, service_of
from m3search.server.schemas import SearchBody, SearchResponse
from m3search.store.filters import parse_filter

router = APIRouter(prefix="/api/v1", tags=["search"], responses=ERRORS)


async def run_search(request: Request, body: SearchBody) -> Response:
    service = service_of(request)
    search = SearchRequest(body.strategy, body.k, body.filters, body.rrf_k, body.weights, body.candidates,
                           body.coarse_dim, body.coarse_k, body.fusion, rerank=body.rerank, rerank_k=body.rerank_k,
                           group_by=body.group_by)
    rerankers = RerankerPool(service.settings, cache=service.runtime.scorers)  # each cross-encoder loaded once
    checked = check_request(search, rerankers)  # once, before the model loads and the query is embedded
    active = await run_in_threadpool(service.store.active_set, body.collection)
    outputs = required_outputs(body.strategy, active)
    embedding = None
    encoder = None
    if outputs:
        encoder = service.encoder_for_set(active)
        embeddings, tokens = await service.embed(encoder, [body.q], outputs=outputs, kind="query",
                                                 route="/api/v1/search")
        request.state.tokens = tokens
        embedding = embeddings[0]
    searcher = Searcher(service.store, encoder, ann_threshold=service.settings.ann_threshold,
                        runtime=service.runtime, rerankers=rerankers)
    result = await run_in_threadpool(searcher.search_checked, body.collection, body.q, embedding, checked)
    return json_response(result.as_dict())


@router.post("/search", response_model=SearchResponse)
async def search_post(body: SearchBody, request: Request) -> Response:
    """Search a collection; ``filters`` is ``{"key": value}`` or ``{"key": [values]}``."""
    return await run_search(request, body)


@router.get("/search", response_model=SearchResponse)
async def search_get(
    request: Request,
    q: str = Query(min_length=1, max_length=MAX_QUERY_CHARS),
    collection: str = Query(),
    strategy: str = Query("hybrid", description=f"one of {', '.join(STRATEGIES)}"),
    k: int = Query(10, ge=1, le=MAX_K),
    coarse_dim: int | None = None,
    coarse_k: int = Query(100, ge=1, le=MAX_CANDIDATES),
    rrf_k: int | None = Query(None, ge=0, description="hybrid's RRF constant (default: the collection's)"),
    fusion: Literal["max", "rrf", "dbsf", "minmax"] | None = Query(
        None, description="how hybrid fuses (default: the collection's saved setting, else the built-in one)"),
    candidates: int = Query(100, ge=1, le=MAX_CANDIDATES),
    filter: list[str] | None = Query(None, description="key=value, repeatable; values are JSON-typed"),
    rerank: str | None = Query(None, description="a cross-encoder's name, or 'llm'"),
    rerank_k: int = Query(50, ge=1, le=MAX_RERANK_K, description="first-stage candidates the reranker reorders (>= k)"),
    group_by: Literal["document", "chunk"] = Query(
        "document", description="one hit per document (its best chunk), or every matching chunk"),
) -> Response:
    """The same search from a URL: ``?q=...&collection=...&strategy=two_stage&coarse_dim=64&coarse_k=100``."""
    check_strategy(strategy)  # a 400 naming the strategies before SearchBody (its Literal) is built
    filters: dict[str, Any] = {}
    for key, value in (parse_filter(f) for f in filter or []):
        filters.setdefault(key, []).append(value)
    body = SearchBody(q=q, collection=collection, strategy=strategy, k=k, filters=filters or None,  # type: ignore[arg-type]
                      rrf_k=rrf_k, fusion=fusion, candidates=candidates, coarse_dim=coarse_dim,
                      coarse_k=coarse_k, rerank=rerank, rerank_k=rerank_k, group_by=group_by)
    return await run_search(request, body)
