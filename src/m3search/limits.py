"""Every parameter's limit, defined once: the library (:class:`~m3search.retrieval.types.SearchRequest`), the CLI
(which builds the same request) and the HTTP API (its request models and query parameters) all read these. See
docs/cli.md for the table."""

from __future__ import annotations

MAX_K = 1000
"""Hits one search returns (``k``, ``--k``); also the search page's field."""
MAX_CANDIDATES = 10_000
"""How deep each retriever of a fusion looks (``candidates``) and the first stage of two_stage keeps (``coarse_k``)."""
MAX_RERANK_K = 1000
"""First-stage candidates a reranker reorders (``rerank_k``, at least ``k``)."""
MAX_PAGE = 1000
"""Documents per page of a listing (``limit``)."""
MAX_QUERY_CHARS = 10_000
"""Characters of a search query (``q``, the query argument)."""
MAX_DOCUMENTS_PER_REQUEST = 1000
"""Documents one ``POST .../documents`` writes."""
MAX_QUERIES_PER_DOC = 100
"""Queries fine-tuning data generation makes per document (``queries_per_doc``)."""
MAX_NEGATIVES = 100
"""Hard negatives per query, and top documents skipped when mining them (``hard_negatives``, ``negatives_skip``)."""
