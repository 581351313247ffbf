"""Image collections: image files as documents, one CLIP vector each, written through the usual ingestion path.

A document is one image: id = the path relative to the argument, text = the file name (so bm25 and filters have
something to match), metadata = width, height and format, content hash = SHA-256 of the file's bytes (an edited
image is re-embedded, an unchanged one skipped). The collection's embedding set carries the CLIP model's
fingerprint, so its vectors are never searched together with a text model's; text documents are refused.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from m3search.errors import ConfigError, DocumentError, ImageError
from m3search.models.encoders import images
from m3search.models.encoders.base import Encoder
from m3search.store.base import Store
from m3search.store.ingest import (
    DEFAULT_MAX_BYTES,
    IndexReport,
    Problem,
    Sources,
    printable,
    start_index,
    undecodable_name,
    write_prepared,
)
from m3search.store.types import Chunk, Document, PreparedDocument
from m3search.types import Output

IMAGE_OUTPUTS: tuple[Output, ...] = ("dense",)
IMAGE_COLLECTION_HINT = ("images are indexed with an image model into their own collection: "
                         "m3search index DIR -c photos --model clip-vit-b-32")


def is_image_model(encoder: Encoder) -> bool:
    """Whether ``encoder`` is an image model (CLIP): its collections hold images, not text."""
    return encoder.spec.family == "clip"


def refuse_text_into_images(encoder: Encoder) -> None:
    """:class:`ConfigError` when text documents are about to be embedded by an image model."""
    if is_image_model(encoder):
        raise ConfigError(f"model '{encoder.spec.name}' builds image collections: index image files "
                          f"({', '.join(images.IMAGE_SUFFIXES)}) with it, and text into another collection with a "
                          f"text model (e.g. --model bge-m3)")


def _walk(path: Path) -> list[tuple[Path, Path]]:
    if path.is_dir():
        return [(p, path) for p in sorted(path.rglob("*")) if p.is_file()]
    return [(path, path.parent)]


def image_document(path: Path, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """One image file as a document (decoded once to check it), or :class:`ImageError` naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"unreadable ({exc.strerror or exc})") from exc
    if len(raw) > max_bytes:
        raise ImageError(str(path), f"larger than {max_bytes} bytes (--max-bytes)")
    width, height, kind = images.probe(raw, str(path))
    metadata = {"width": width, "height": height, "format": kind}
    return Document(path.relative_to(root).as_posix(), path.name, str(path), "", metadata,
                    stored_hash=hashlib.sha256(raw).hexdigest())


def read_images(paths: Sequence[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Sources:
    """Image documents from files and directories (recursively); problems for everything skipped."""
    out = Sources()
    seen: dict[str, str] = {}
    for argument in paths:
        if not argument.exists():
            out.problems.append(Problem(printable(str(argument)), "no such file or directory"))
            continue
        for path, root in _walk(argument):
            bad_name = undecodable_name(path)
            if bad_name is not None:
                out.problems.append(bad_name)
                continue
            if not images.is_image_path(path):
                out.problems.append(Problem(str(path), f"not an image ({', '.join(images.IMAGE_SUFFIXES)}); "
                                                       f"text goes into a collection of a text model"))
                continue
            try:
                doc = image_document(path, root, max_bytes)
            except DocumentError as exc:
                out.problems.append(Problem(exc.source, exc.reason))
                continue
            if doc.doc_id in seen:
                out.problems.append(Problem(str(path), f"duplicate id '{doc.doc_id}' (also in {seen[doc.doc_id]})"))
                continue
            seen[doc.doc_id] = str(path)
            out.documents.append(doc)
    return out


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
    encode = getattr(encoder, "encode_images", None)
    if not is_image_model(encoder) or encode is None:
        raise ConfigError(f"model '{encoder.spec.name}' embeds text only; {IMAGE_COLLECTION_HINT}")
    start = time.perf_counter()
    plan, report = start_index(store, encoder, collection, documents, outputs=IMAGE_OUTPUTS, chunk_tokens=None,
                               overlap=None, progress=progress)
    for offset in range(0, len(plan.todo), batch_docs):
        batch = plan.todo[offset : offset + batch_docs]
        embeddings = encode([Path(d.source) for d in batch], names=[d.source for d in batch])
        prepared = [PreparedDocument(d, [Chunk(0, d.text, 0, len(d.text), 0)], [e])
                    for d, e in zip(batch, embeddings, strict=True)]
        write_prepared(store, plan, prepared, report)
        if progress is not None:
            progress(len(batch), len(batch))
    report.seconds = time.perf_counter() - start
    return report
