"""Stores by URL: ``sqlite:///path.db`` (the default: a plain path means SQLite too), ``qdrant+edge:///dir``
(Qdrant's engine embedded), ``http(s)://host:6333`` (a Qdrant server or cluster; API key from
``M3SEARCH_QDRANT_API_KEY``) and ``qdrant+local:///dir`` (qdrant-client's local mode, a test double)."""

from __future__ import annotations

from pathlib import Path

from m3search.errors import ConfigError
from m3search.settings import Settings
from m3search.store.base import CatalogStore
from m3search.store.qdrant.driver import Deployment, redact

SCHEMES = ("sqlite", "qdrant+edge", "qdrant+local", "http", "https")


def _path(url: str, scheme: str) -> Path:
    rest = url[len(scheme) + 3:]  # after "scheme://"
    if not rest or rest == "/":
        raise ConfigError(f"{url!r} names no path: use {scheme}:///absolute/path or {scheme}://relative/path")
    return Path(rest).expanduser()




def open_store(url: str | Path, *, api_key: str | None = None, exact: bool = False,
               deployment: Deployment | None = None) -> CatalogStore:
    """The store a URL names; :class:`ConfigError` (listing the schemes) for anything else.

    ``exact`` makes Qdrant stores search exhaustively instead of through HNSW (SQLite decides by its own threshold);
    ``deployment`` lays out the Qdrant collections created (shards, replicas, int8 quantization).
    """
    if isinstance(url, Path) or "://" not in url:
        from m3search.store.sqlite import SQLiteStore

        return SQLiteStore(Path(url).expanduser())
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from m3search.store.sqlite import SQLiteStore

        return SQLiteStore(_path(url, scheme))
    from m3search.store.qdrant.store import QdrantStore

    if scheme == "qdrant+edge":
        from m3search.store.qdrant.edge import EdgeDriver

        return QdrantStore(EdgeDriver(_path(url, scheme), deployment), exact=exact)
    if scheme == "qdrant+local":
        from m3search.store.qdrant.client import ClientDriver

        return QdrantStore(ClientDriver(path=str(_path(url, scheme)), deployment=deployment), exact=exact)
    if scheme in ("http", "https"):
        from m3search.store.qdrant.client import ClientDriver

        return QdrantStore(ClientDriver(url=url, api_key=api_key, deployment=deployment), exact=exact)
    raise ConfigError(f"unknown store URL {redact(url)!r}: use one of {', '.join(s + '://' for s in SCHEMES)}")


def configured_store(settings: Settings, *, db: Path | None = None, url: str | None = None) -> CatalogStore:
    """The store a command or server uses: ``url`` (``--store``), else ``db`` (``--db``), else
    ``M3SEARCH_STORE``, else the SQLite file ``M3SEARCH_DB`` (default ``HOME/index.sqlite3``)."""
    if url is not None and db is not None:
        raise ConfigError("give --store or --db, not both")
    chosen: str | Path = url or db or settings.store or settings.index_db
    deployment = Deployment(settings.qdrant_shards, settings.qdrant_replicas, settings.qdrant_quantization)
    return open_store(chosen, api_key=settings.qdrant_api_key, deployment=deployment)
