"""m3search: local-first embedding and hybrid retrieval built around BAAI/bge-m3.

Importing the package does no work: models load on first use. The search side (``Searcher``, ``SearchRequest``,
``open_store``, ``index_documents``, ``Document``, ``load_reranker``) is exported lazily: its modules (SQLite, scipy,
the store and retrieval layers) are imported on first access of the name, not by ``import m3search``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from m3search.errors import M3SearchError
from m3search.models.encoders.base import Encoder, stack_dense
from m3search.models.encoders.bge_m3 import BGEM3Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.encoders.scores import M3Scores, colbert_score, compute_score, lexical_matching_score
from m3search.models.registry import ModelSpec, get_spec, list_specs
from m3search.settings import Settings, get_settings
from m3search.types import Embedding, SparseVector

if TYPE_CHECKING:
    from m3search.ingest.pipeline import index_documents
    from m3search.models.rerank.cross_encoder import load_reranker
    from m3search.retrieval.search import Searcher
    from m3search.retrieval.types import SearchRequest
    from m3search.store.types import Document
    from m3search.store.urls import open_store

# name -> the module that defines it, imported on first access (PEP 562).
_LAZY: dict[str, str] = {
    "Document": "m3search.store.types",
    "Searcher": "m3search.retrieval.search",
    "SearchRequest": "m3search.retrieval.types",
    "index_documents": "m3search.ingest.pipeline",
    "load_reranker": "m3search.models.rerank.cross_encoder",
    "open_store": "m3search.store.urls",
}

__all__ = [
    "BGEM3Encoder",
    "Document",
    "Embedding",
    "Encoder",
    "M3Scores",
    "M3SearchError",
    "ModelSpec",
    "SearchRequest",
    "Searcher",
    "Settings",
    "SparseVector",
    "colbert_score",
    "compute_score",
    "get_settings",
    "get_spec",
    "index_documents",
    "lexical_matching_score",
    "list_specs",
    "load_encoder",
    "load_reranker",
    "open_store",
    "stack_dense",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The lazily exported names of :data:`_LAZY`; anything else is an :class:`AttributeError` as usual."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'm3search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
