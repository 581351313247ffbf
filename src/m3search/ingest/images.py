"""Image collections: image files as documents, one CLIP vector each, written through the usual ingestion path.

A document is one image: id = the path relative to the argument, text = the file name (so bm25 and filters have
something to match), metadata = width, height and format, content hash = SHA-256 of the file's bytes (an edited
image is re-embedded, an unchanged one skipped). The collection's embedding set carries the CLIP model's
fingerprint, so its vectors are never searched together with a text model's; text documents are refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from m3search.errors import ConfigError
from m3search.ingest.pipeline import IndexReport, start_index, write_prepared
from m3search.models.encoders.base import Encoder
from m3search.store.base import Store
from m3search.store.types import Chunk, Document, PreparedDocument
from m3search.types import Output

IMAGE_OUTPUTS: tuple[Output, ...] = ("dense",)
IMAGE_COLLECTION_HINT = ("images are indexed with an image model into their own collection: "
                         "m3search index DIR -c photos --model clip-vit-b-32")




def index_images(
    store: Store,
    encoder: Encoder,
    collection: str,
    documents: Sequence[Document],
    *,
    batch_docs: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """Index image ``documents`` (from :func:`read_images`) into ``collection`` with a CLIP ``encoder``.

    The collection is created on first use with the encoder's configuration; unchanged images (same bytes) are
    skipped; each batch is embedded by the vision tower and written in one transaction.
    """
    if not encoder.embeds_images:
        raise ConfigError(f"model '{encoder.spec.name}' embeds text only; {IMAGE_COLLECTION_HINT}")
    start = time.perf_counter()
    plan, report = start_index(store, encoder, collection, documents, outputs=IMAGE_OUTPUTS, chunk_tokens=None,
                               overlap=None, progress=progress)
    for offset in range(0, len(plan.todo), batch_docs):
        batch = plan.todo[offset : offset + batch_docs]
        embeddings = encoder.encode_images([Path(d.source) for d in batch], names=[d.source for d in batch])
        prepared = [PreparedDocument(d, [Chunk(0, d.text, 0, len(d.text), 0)], [e])
                    for d, e in zip(batch, embeddings, strict=True)]
        write_prepared(store, plan, prepared, report)
        if progress is not None:
            progress(len(batch), len(batch))
    report.seconds = time.perf_counter() - start
    return report
