"""A collection's state in one JSON-ready dict: counts, active model, every set and its progress."""

from __future__ import annotations

from typing import Any

from m3search.store.base import Store
from m3search.store.types import EmbeddingSet


def set_status(store: Store, embedding_set: EmbeddingSet, chunks: int) -> dict[str, Any]:
    """One set: model, fingerprint, dimension, vectors written and the share of the collection's chunks."""
    done = store.vector_count(embedding_set)
    config = embedding_set.config
    return {"id": embedding_set.id, "collection": embedding_set.collection, "status": embedding_set.status,
            "model": config.model, "fingerprint": config.fingerprint, "quantization": config.quantization,
            "dim": config.vector_dim, "truncate_dim": config.truncate_dim, "outputs": list(config.outputs),
            "vectors": done, "progress": round(done / chunks, 4) if chunks else 1.0}


def collection_status(store: Store, name: str) -> dict[str, Any]:
    """Documents, chunks, the active model and fingerprint, every set, and chunks pending in a building set."""
    documents, chunks = store.counts(name)
    active = store.active_set(name)
    building = store.building_set(name)
    return {"collection": name, "documents": documents, "chunks": chunks, "model": active.config.model,
            "fingerprint": active.config.fingerprint,
            "sets": [set_status(store, s, chunks) for s in store.sets(name)],
            "pending": store.pending_count(building) if building else 0}
