"""Results by document: one hit per document (its best chunk), with the document's other matching chunks listed.

This is the one implementation of "a document ranks by its best chunk": ``group_by="document"`` searches and the
evaluation harness (whose runs rank documents) both go through :func:`group_hits`. Grouping runs on the final
chunk ranking, after fusion and after the rerank stage, so the best chunk is the one the last stage put first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from m3search.retrieval.types import ChunkMatch, SearchHit, SearchRequest, SearchResult

CHUNKS_PER_DOCUMENT = 3  # the first search looks at 3 chunks per wanted document
GROWTH = 4  # then 4 times deeper while the chunks found cover fewer than k documents
MAX_CHUNKS = 10_000
MAX_RERANKED = 1000  # a rerank stage never scores more chunks than rerank_k may ask for


def group_hits(hits: Sequence[SearchHit], k: int | None = None) -> list[SearchHit]:
    """One hit per document, in the order of each document's best (first) chunk, at most ``k`` of them.

    ``hits`` are chunk hits, best first. Each document's hit is its best chunk with ``other_chunks`` set to the
    document's other chunks among ``hits`` (best first: chunk id, ordinal, character span, final score)."""
    grouped: dict[str, list[SearchHit]] = {}
    for hit in hits:
        grouped.setdefault(hit.document_id, []).append(hit)
    documents = list(grouped.values())[:k]
    return [replace(best, other_chunks=tuple(ChunkMatch(h.chunk_id, h.ordinal, h.start, h.end, h.score)
                                             for h in rest))
            for best, *rest in documents]


def first_depth(request: SearchRequest) -> int:
    """How many chunks the first try of a document search ranks: the reranker's ``rerank_k`` candidates when
    there is a rerank stage (its cost stays the caller's choice), else :data:`CHUNKS_PER_DOCUMENT` per wanted
    document (the retrievers of a fusion still look ``candidates`` deep; only the hits looked up are fewer)."""
    if request.rerank is not None:
        return max(request.rerank_k, request.k)
    return min(CHUNKS_PER_DOCUMENT * request.k, MAX_CHUNKS)


def search_documents(search_chunks: Callable[[int], SearchResult], request: SearchRequest) -> SearchResult:
    """``request.k`` documents from a chunk search: ``search_chunks(depth)`` returns the top ``depth`` chunks
    (fused and reranked); the depth grows until they cover ``k`` documents or the ranking runs out (at most
    :data:`MAX_CHUNKS` chunks, :data:`MAX_RERANKED` with a rerank stage)."""
    limit = max(MAX_RERANKED, request.rerank_k) if request.rerank is not None else MAX_CHUNKS
    depth = first_depth(request)
    while True:
        result = search_chunks(depth)
        documents = group_hits(result.hits, request.k)
        if len(documents) >= request.k or len(result.hits) < depth or depth >= limit:
            break
        depth = min(depth * GROWTH, limit)
    details = {**result.details, "k": request.k, "group_by": "document", "chunks_ranked": depth}
    return replace(result, hits=documents, details=details)
