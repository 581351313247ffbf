"""Reading documents from files, and indexing them: chunk, embed, write one transaction per batch.

Supported files: ``.txt`` and ``.md`` (one document each, id = path relative to the argument), and ``.jsonl`` in
the BEIR corpus format (``_id`` or ``id``, ``text``, optional ``title`` and ``metadata``). Bad input never stops
the run and never writes anything partial: each problem is reported with its source and reason.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3search.errors import ConfigError, DocumentError, InputError
from m3search.models.encoders.base import Encoder
from m3search.store.base import Store
from m3search.store.chunking import chunk_text, chunk_texts
from m3search.store.types import Document, EmbeddingConfig, EmbeddingSet, PreparedDocument
from m3search.types import Embedding, Output
from m3search.validation import check_json, check_string

SUFFIXES = (".txt", ".md", ".jsonl")
DEFAULT_MAX_BYTES = 10_000_000


@dataclass(frozen=True)
class Problem:
    """Why one file, line or document was skipped."""

    source: str
    reason: str


@dataclass
class Sources:
    """Documents read from paths, and what was skipped."""

    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def printable(text: str) -> str:
    """``text`` as it can be printed and stored: bytes that were not UTF-8 (a file name's surrogate escapes) shown
    as ``\\xe9``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def undecodable_name(path: Path) -> Problem | None:
    """A problem for a file whose name is not UTF-8 (a Latin-1 ``caf\\xe9.txt``): ids and sources are text."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return Problem(printable(str(path)), "file name is not valid UTF-8 (rename it: ids and sources are text)")
    return None


def check_text(source: str, raw: bytes, max_bytes: int) -> str:
    """The text of ``raw`` if it is a usable document, else :class:`DocumentError` saying why."""
    if len(raw) > max_bytes:
        error = DocumentError(source, f"larger than {max_bytes} bytes (--max-bytes)")
        error.set_message(f"{source}: larger than {max_bytes} bytes", " (max_bytes)", cli=" (--max-bytes)",
                          http=" (the server's limit)")
        raise error
    if b"\x00" in raw:
        raise DocumentError(source, "contains NUL bytes (binary file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(source, f"not valid UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise DocumentError(source, "empty or whitespace only")
    return text


def _jsonl(path: Path, raw: bytes, max_bytes: int, out: Sources) -> None:
    seen: set[str] = set()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise DocumentError(where, "not a JSON object")
            _check_unicode(where, line, record)
            doc_id = record.get("_id", record.get("id"))
            if not isinstance(doc_id, str | int) or str(doc_id) == "":
                raise DocumentError(where, "no '_id' or 'id'")
            text = record.get("text")
            if not isinstance(text, str):
                raise DocumentError(where, "no 'text' string")
            text = check_text(where, text.encode("utf-8"), max_bytes)
            metadata = record.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise DocumentError(where, "'metadata' must be an object")
            if str(doc_id) in seen:
                raise DocumentError(where, f"duplicate id '{doc_id}' in this file")
            title = record.get("title") if isinstance(record.get("title"), str) else ""
            check_document(Document(str(doc_id), text, str(path), title or "", metadata), where)
        except DocumentError as exc:
            out.problems.append(Problem(exc.source, exc.reason))
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            out.problems.append(Problem(where, f"invalid JSON ({exc})"))
            continue
        seen.add(str(doc_id))
        out.documents.append(Document(str(doc_id), text, str(path), title or "", metadata))


def _check_unicode(where: str, line: bytes, record: dict[str, Any]) -> None:
    """:class:`DocumentError` for a JSON line whose escapes make a lone surrogate (``"\\ud800"``) anywhere in the
    record: not text that can be hashed or stored. Only lines with escapes are looked at twice."""
    if b"\\u" not in line:
        return
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DocumentError(where, "contains a lone surrogate escape (\\ud800-\\udfff): not valid Unicode "
                                   "text") from None


def check_document(doc: Document, where: str | None = None) -> Document:
    """``doc`` if its id, title, text and metadata pass :mod:`m3search.validation` (no lone surrogate or NUL, bounded
    metadata), else :class:`DocumentError` naming it: nothing that could not be hashed, stored or read back."""
    source = where or f"document {doc.doc_id[:200]!r}"
    try:
        for field_name, value in (("id", doc.doc_id), ("title", doc.title), ("text", doc.text)):
            check_string(field_name, value)
        check_json("metadata", doc.metadata)
    except InputError as exc:
        raise DocumentError(source, str(exc)) from exc
    return doc


def _files(path: Path) -> Iterable[tuple[Path, Path]]:
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file() or p.is_symlink()):
            yield child, path
    else:
        yield path, path.parent


def read_sources(paths: Sequence[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Sources:
    """Documents from files and directories (recursively); problems for everything skipped."""
    out = Sources()
    for argument in paths:
        if not argument.exists():
            out.problems.append(Problem(printable(str(argument)), "no such file or directory"))
            continue
        for path, root in _files(argument):
            bad_name = undecodable_name(path)
            if bad_name is not None:
                out.problems.append(bad_name)
                continue
            if path.suffix.lower() not in SUFFIXES:
                out.problems.append(Problem(str(path), f"unsupported type (use {', '.join(SUFFIXES)})"))
                continue
            try:
                raw = path.read_bytes()
            except OSError as exc:
                out.problems.append(Problem(str(path), f"unreadable ({exc.strerror or exc})"))
                continue
            if path.suffix.lower() == ".jsonl":
                _jsonl(path, raw, max_bytes, out)
                continue
            try:
                text = check_text(str(path), raw, max_bytes)
            except DocumentError as exc:
                out.problems.append(Problem(exc.source, exc.reason))
                continue
            out.documents.append(Document(path.relative_to(root).as_posix(), text, str(path)))
    return _dedupe(out)


def _dedupe(sources: Sources) -> Sources:
    first: dict[str, Document] = {}
    for doc in sources.documents:
        if doc.doc_id in first:
            other = first[doc.doc_id].source
            sources.problems.append(Problem(doc.source, f"duplicate id '{doc.doc_id}' (also in {other})"))
        else:
            first[doc.doc_id] = doc
    sources.documents = list(first.values())
    return sources


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
    quantization = str(getattr(encoder, "precision", "none"))
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
    if encoder.spec.family == "clip":
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
    stored without vectors: they are pending in the active set until :func:`~m3search.store.reembed.embed_pending`.
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
