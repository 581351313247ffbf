"""A collection read back for data generation: its chunks with their BM25 term weights, and its documents
(title and full text, rebuilt from the chunks' character spans) for the BEIR corpus of the validation split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from m3search.finetune.queries import SourceChunk
from m3search.retrieval.lexical import Bm25Index
from m3search.store.base import Store
from m3search.store.types import Chunk, Document

PAGE = 500  # chunk ids per read of chunk texts


@dataclass(frozen=True)
class CollectionData:
    """Documents in store order, and each document's chunks in order (ascending chunk id)."""

    documents: list[Document]
    chunks: dict[str, list[SourceChunk]]

    @property
    def chunk_count(self) -> int:
        return sum(len(c) for c in self.chunks.values())


def rebuild_text(title: str, chunks: Sequence[Chunk]) -> str:
    """A document's text from its chunks (character spans of ``title + "\\n\\n" + text``; overlaps written once,
    gaps between chunks as spaces), without the title prefix that indexing added."""
    size = max((c.end for c in chunks), default=0)
    characters = [" "] * size
    for chunk in chunks:
        characters[chunk.start:chunk.end] = chunk.text
    full = "".join(characters)
    prefix = f"{title}\n\n"
    return full[len(prefix):] if title and full.startswith(prefix) else full


def _chunk_weights(index: Bm25Index) -> list[tuple[dict[str, float], frozenset[str]]]:
    """Per row of ``index``: term -> BM25 weight of that term in that chunk (idf times saturated tf), and the
    chunk's terms that occur in no other chunk."""
    terms = [""] * len(index.vocabulary)
    for term, position in index.vocabulary.items():
        terms[position] = term
    chunks_with = np.diff(index.weights.indptr)  # CSC: chunks holding each term
    rows = index.weights.tocsr()
    found = []
    for row in range(rows.shape[0]):
        span = slice(rows.indptr[row], rows.indptr[row + 1])
        ids, values = rows.indices[span], rows.data[span]
        found.append(({terms[t]: float(w * index.idf[t]) for t, w in zip(ids, values, strict=True)},
                      frozenset(terms[t] for t in ids if chunks_with[t] == 1)))
    return found


def load_collection(store: Store, collection: str) -> CollectionData:
    """Every chunk of ``collection`` (text, document, BM25 term weights) and every document.

    Raises:
        CollectionNotFoundError: no such collection.
    """
    store.active_set(collection)  # an unknown name fails here, before any read
    index = Bm25Index.build(store.term_counts(collection))
    weights = _chunk_weights(index)
    row_of = {int(c): row for row, c in enumerate(index.chunk_ids)}
    ids = sorted(row_of)
    chunks: dict[str, list[SourceChunk]] = {}
    for offset in range(0, len(ids), PAGE):
        for hit in store.hits([(c, 0.0) for c in ids[offset:offset + PAGE]], collection):
            chunks.setdefault(hit.doc_id, []).append(SourceChunk(hit.chunk_id, hit.doc_id, hit.text,
                                                                 *weights[row_of[hit.chunk_id]]))
    documents = [Document(p.document.doc_id, rebuild_text(p.document.title, p.chunks), p.document.source,
                          p.document.title, p.document.metadata) for p in store.export_documents(collection)]
    return CollectionData(documents, {d: sorted(c, key=lambda s: s.chunk_id) for d, c in chunks.items()})
