"""Indexing documents: plan (create the collection or check its model, skip unchanged documents), chunk, embed,
write one transaction per batch. Documents come from :mod:`m3search.ingest.sources` (files), the server or the
caller; bad input never writes anything partial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from m3search.errors import ConfigError
from m3search.ingest.chunking import chunk_text, chunk_texts
from m3search.ingest.sources import Problem, check_document
from m3search.models.encoders.base import Encoder
from m3search.models.registry import is_image_model
from m3search.store.base import Store
from m3search.store.types import Document, EmbeddingConfig, EmbeddingSet, PreparedDocument
from m3search.types import Embedding, Output

# (document texts, outputs, max tokens) -> one embedding per text, in order.
EmbedFn = Callable[[Sequence[str], Sequence[Output], int], list[Embedding]]


def direct_embed(encoder: Encoder) -> EmbedFn:
    """Documents embedded by ``encoder`` in the calling thread."""

    def embed(texts: Sequence[str], outputs: Sequence[Output], max_length: int) -> list[Embedding]:
        return encoder.encode_documents(texts, outputs=list(outputs), max_length=max_length)

    return embed


def default_outputs(encoder: Encoder) -> tuple[Output, ...]:
    """Dense and sparse where the model has them (BGE-M3: both; SPLADE: sparse); ColBERT only when asked."""
    return tuple(o for o in encoder.spec.outputs if o != "colbert")


def config_for(encoder: Encoder, outputs: Sequence[Output]) -> EmbeddingConfig:
    """The embedding configuration (and so the fingerprint) of ``encoder`` producing ``outputs``."""
    spec = encoder.spec
    truncate = encoder.dim if encoder.dim != spec.dim else None
    quantization = encoder.precision or "none"
    return EmbeddingConfig(spec.name, spec.revision, spec.dim, truncate, tuple(outputs), quantization)


@dataclass
class IndexReport:
    """What an indexing run did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    truncated: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged, "chunks": self.chunks,
                "truncated": self.truncated, "seconds": round(self.seconds, 3),
                "problems": [{"source": p.source, "reason": p.reason} for p in self.problems]}


@dataclass(frozen=True)
class IndexPlan:
    """What an indexing run writes to: the set, its outputs and chunk sizes, and the documents that changed."""

    target: EmbeddingSet
    outputs: tuple[Output, ...]
    chunk_tokens: int
    overlap: int
    known: dict[str, str]
    todo: list[Document]


def chunk_sizes(encoder: Encoder, chunk_tokens: int | None, overlap: int | None) -> tuple[int, int]:
    """A new collection's (chunk_tokens, overlap): the defaults filled in (what the model embeds without truncation;
    min(64, size / 8)), validated with the model's tokenizer before anything is created."""
    chunk_tokens = chunk_tokens or encoder.max_length
    overlap = overlap if overlap is not None else min(64, chunk_tokens // 8)
    chunk_text("probe", encoder.tokenizer, chunk_tokens, overlap)  # raises ConfigError for unusable sizes
    return chunk_tokens, overlap


def plan_index(store: Store, encoder: Encoder, collection: str, documents: Sequence[Document], *,
               outputs: Sequence[Output] | None = None, chunk_tokens: int | None = None,
               overlap: int | None = None) -> IndexPlan:
    """Create the collection on first use (with this encoder's configuration) or check its model; keep the
    documents whose content hash changed."""
    for doc in documents:  # before the collection is created or anything is hashed or written
        check_document(doc)
    wanted = tuple(outputs or default_outputs(encoder))
    config = config_for(encoder, wanted)
    if collection in store.collections():
        target = store.check_model(collection, config)
        chunk_tokens, overlap = store.collection_settings(collection)
    else:
        chunk_tokens, overlap = chunk_sizes(encoder, chunk_tokens, overlap)
        target = store.create_collection(collection, config, chunk_tokens, overlap)
    known = store.content_hashes(collection)
    todo = [d for d in documents if known.get(d.doc_id) != d.content_hash]
    return IndexPlan(target, wanted, chunk_tokens, overlap, known, todo)


def start_index(store: Store, encoder: Encoder, collection: str, documents: Sequence[Document], *,
                outputs: Sequence[Output] | None, chunk_tokens: int | None, overlap: int | None,
                progress: Callable[[int, int], None] | None) -> tuple[IndexPlan, IndexReport]:
    """:func:`plan_index`, and a report that counts (and reports to ``progress``) the unchanged documents."""
    plan = plan_index(store, encoder, collection, documents, outputs=outputs, chunk_tokens=chunk_tokens,
                      overlap=overlap)
    report = IndexReport(unchanged=len(documents) - len(plan.todo))
    if progress is not None and report.unchanged:
        progress(report.unchanged, 0)
    return plan, report


def refuse_image_model(encoder: Encoder) -> None:
    """:class:`ConfigError` for an image model (CLIP): text vectors must never enter an image collection."""
    if is_image_model(encoder.spec):
        raise ConfigError(f"model '{encoder.spec.name}' builds image collections: index image files with it, and "
                          f"text into another collection with a text model (e.g. --model bge-m3)")


def prepare_documents(encoder: Encoder, batch: Sequence[Document], outputs: Sequence[Output], chunk_tokens: int,
                      overlap: int, *, vectors: bool = True, embed: EmbedFn | None = None) -> list[PreparedDocument]:
    """Chunk ``batch`` and embed every chunk (or leave the vectors out): ready for one ``write_documents``."""
    refuse_image_model(encoder)
    embed = embed or direct_embed(encoder)
    pieces = chunk_texts([_full_text(d) for d in batch], encoder.tokenizer, chunk_tokens, overlap)
    texts = [c.text for chunks in pieces for c in chunks]
    embeddings = iter(embed(texts, outputs, chunk_tokens) if vectors
                      else [Embedding(tokens=c.tokens, truncated=False) for chunks in pieces for c in chunks])
    return [PreparedDocument(d, chunks, [next(embeddings) for _ in chunks]) for d, chunks in
            zip(batch, pieces, strict=True)]


def write_prepared(store: Store, plan: IndexPlan, prepared: Sequence[PreparedDocument], report: IndexReport) -> None:
    """One transaction for ``prepared``, counted into ``report``."""
    store.write_documents(plan.target, prepared)
    for doc in prepared:
        report.updated += doc.document.doc_id in plan.known
        report.added += doc.document.doc_id not in plan.known
        report.chunks += len(doc.chunks)
        report.truncated += sum(e.truncated for e in doc.embeddings)


def index_documents(
    store: Store,
    encoder: Encoder,
    collection: str,
    documents: Sequence[Document],
    *,
    outputs: Sequence[Output] | None = None,
    chunk_tokens: int | None = None,
    overlap: int | None = None,
    batch_docs: int = 32,
    progress: Callable[[int, int], None] | None = None,
    vectors: bool = True,
    embed: EmbedFn | None = None,
) -> IndexReport:
    """Index ``documents`` into ``collection`` (created on first use with this encoder's configuration).

    Unchanged documents (same content hash) are skipped; changed ones are re-chunked and re-embedded. Each
    batch of ``batch_docs`` documents is written in one transaction. ``progress(documents, chunks)`` is called
    after each batch (and once for the unchanged documents). With ``vectors=False`` documents and chunks are
    stored without vectors: they are pending in the active set until :func:`~m3search.ingest.reembed.embed_pending`.
    ``embed`` replaces the direct call of the encoder (a server passes one that goes through its batcher).
    """
    start = time.perf_counter()
    refuse_image_model(encoder)  # before the collection is created
    plan, report = start_index(store, encoder, collection, documents, outputs=outputs, chunk_tokens=chunk_tokens,
                               overlap=overlap, progress=progress)
    for offset in range(0, len(plan.todo), batch_docs):
        batch = plan.todo[offset : offset + batch_docs]
        prepared = prepare_documents(encoder, batch, plan.outputs, plan.chunk_tokens, plan.overlap, vectors=vectors,
                                     embed=embed)
        write_prepared(store, plan, prepared, report)
        if progress is not None:
            progress(len(batch), sum(len(p.chunks) for p in prepared))
    report.seconds = time.perf_counter() - start
    return report


def _full_text(doc: Document) -> str:
    return f"{doc.title}\n\n{doc.text}" if doc.title else doc.text
