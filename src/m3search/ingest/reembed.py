"""Switching a collection's model with zero downtime: fill a ``building`` set, then swap it in atomically."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from m3search.errors import ConfigError, StoreError
from m3search.ingest.pipeline import EmbedFn, config_for, default_outputs, direct_embed
from m3search.models.encoders.base import Encoder
from m3search.models.registry import is_image_model
from m3search.store.base import Store
from m3search.store.types import EmbeddingSet
from m3search.types import Output


@dataclass
class ReembedReport:
    """What a re-embedding run did."""

    fingerprint: str
    embedded: int = 0
    truncated: int = 0
    seconds: float = 0.0
    activated: bool = False


def reembed(
    store: Store,
    encoder: Encoder,
    collection: str,
    *,
    outputs: Sequence[Output] | None = None,
    batch: int = 256,
    progress: Callable[[int, int], None] | None = None,
    activate: bool = True,
    embed: EmbedFn | None = None,
) -> ReembedReport:
    """Embed every chunk of ``collection`` with ``encoder`` into a building set, then make it active.

    Resumable: chunks that already have a vector in the building set are not embedded again, so a killed run
    continues where it stopped. Searches keep using the active set until the swap. ``progress(done, total)``
    is called after each batch. Chunks added meanwhile by an indexer are picked up before the swap.
    """
    start = time.perf_counter()
    if is_image_model(encoder.spec) or is_image_model(store.active_set(collection).config.model):
        raise ConfigError(f"collection '{collection}': image collections (and CLIP) cannot be re-embedded from chunk "
                          f"text; index the image files again into a new collection")
    wanted = tuple(outputs or default_outputs(encoder))
    target = store.start_set(collection, config_for(encoder, wanted))
    report = ReembedReport(target.config.fingerprint)
    while True:
        embed_pending(store, encoder, target, wanted, batch=batch, report=report, progress=progress, embed=embed)
        if not activate:
            break
        try:
            store.activate(target)
        except StoreError:
            if store.pending_count(target) == 0:
                raise
            continue  # an indexer added chunks between the last batch and the swap: embed them too
        report.activated = True
        break
    report.seconds = time.perf_counter() - start
    return report


def embed_pending(
    store: Store,
    encoder: Encoder,
    target: EmbeddingSet,
    outputs: Sequence[Output],
    *,
    batch: int = 256,
    report: ReembedReport | None = None,
    progress: Callable[[int, int], None] | None = None,
    embed: EmbedFn | None = None,
) -> ReembedReport:
    """Embed the chunks of ``target``'s collection that have no vector in ``target`` yet (any set status).

    Each batch is one transaction, so a stopped run loses nothing and the next one continues.
    """
    report = report or ReembedReport(target.config.fingerprint)
    embed = embed or direct_embed(encoder)
    chunk_tokens, _ = store.collection_settings(target.collection)
    total = report.embedded + store.pending_count(target)
    while rows := store.pending(target, batch):
        embeddings = embed([text for _, text in rows], outputs, min(chunk_tokens, encoder.max_length))
        store.write_vectors(target, [(chunk_id, e) for (chunk_id, _), e in zip(rows, embeddings, strict=True)])
        report.embedded += len(rows)
        report.truncated += sum(e.truncated for e in embeddings)
        if progress is not None:
            progress(report.embedded, max(total, report.embedded))
    return report
