"""Ingestion: documents read from files (:mod:`.sources`), chunked by the model's tokens (:mod:`.chunking`),
embedded and written to a store one transaction per batch (:mod:`.pipeline`; on a Ray actor pool:
:mod:`.distributed`); image files into an image model's collection (:mod:`.images`); a collection switched to
another model without downtime (:mod:`.reembed`).

Layer: above :mod:`m3search.store` (which never imports this package) and below :mod:`m3search.retrieval`."""

from m3search.ingest.chunking import chunk_text, chunk_texts
from m3search.ingest.distributed import RayOptions, index_documents_ray
from m3search.ingest.images import index_images
from m3search.ingest.pipeline import IndexReport, config_for, default_outputs, index_documents
from m3search.ingest.reembed import ReembedReport, embed_pending, reembed
from m3search.ingest.sources import Problem, Sources, check_document, read_images, read_sources

__all__ = ["IndexReport", "Problem", "RayOptions", "ReembedReport", "Sources", "check_document", "chunk_text",
           "chunk_texts", "config_for", "default_outputs", "embed_pending", "index_documents", "index_documents_ray",
           "index_images", "read_images", "read_sources", "reembed"]
