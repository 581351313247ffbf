"""Typed records of the store: embedding configurations, documents, chunks, sets, status."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from m3search.types import Embedding

SetStatus = Literal["building", "active", "retired"]


@dataclass(frozen=True)
class EmbeddingConfig:
    """What determines a vector: model, revision, dimension, truncation, outputs, precision.

    Two configurations with the same :attr:`fingerprint` produce interchangeable vectors; any other pair must
    never be searched together, even when their dimensions agree.
    """

    model: str
    revision: str
    dim: int
    truncate_dim: int | None = None
    outputs: tuple[str, ...] = ("dense",)
    quantization: str = "none"

    @cached_property
    def fingerprint(self) -> str:
        payload = json.dumps(
            {"model": self.model, "revision": self.revision, "dim": self.dim, "truncate_dim": self.truncate_dim,
             "outputs": sorted(self.outputs), "quantization": self.quantization},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def vector_dim(self) -> int:
        """The dimension stored: the truncation if any, else the model's."""
        return self.truncate_dim or self.dim

    def describe(self) -> str:
        extra = f", dim {self.truncate_dim}" if self.truncate_dim else ""
        return f"{self.model} ({self.quantization}{extra}, fingerprint {self.fingerprint})"


@dataclass(frozen=True)
class Chunk:
    """A piece of a document as embedded: its text, character span and token count."""

    ordinal: int
    text: str
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class Document:
    """A document to index: its id, text, where it came from, and free metadata.

    ``stored_hash`` carries a content hash over from another store (``migrate-store`` copies chunks, not the full
    text), so a later ``index`` of the same files still sees the document unchanged.
    """

    doc_id: str
    text: str
    source: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    stored_hash: str | None = None

    @property
    def content_hash(self) -> str:
        if self.stored_hash is not None:
            return self.stored_hash
        payload = json.dumps([self.title, self.text, self.metadata], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PreparedDocument:
    """A document with its chunks and one embedding per chunk, ready to be written in one transaction."""

    document: Document
    chunks: list[Chunk]
    embeddings: list[Embedding]


@dataclass(frozen=True)
class EmbeddingSet:
    """A collection's vectors of one configuration."""

    id: int
    collection: str
    config: EmbeddingConfig
    status: SetStatus


@dataclass(frozen=True)
class Hit:
    """One search result."""

    chunk_id: int
    doc_id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    ordinal: int | None = None  # the chunk's place in its document and its character span there
    start: int | None = None
    end: int | None = None
