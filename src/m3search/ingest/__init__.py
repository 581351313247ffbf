"""Ingestion: documents read from files, chunked, embedded and written to a store."""
