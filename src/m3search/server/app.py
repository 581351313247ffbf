"""The app factory: ``create_app(settings)`` builds a FastAPI app whose lifespan opens the store, starts the
batcher, optionally preloads the model, resumes interrupted background jobs, and undoes all of it on shutdown."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from m3search import __version__
from m3search.errors import M3SearchError
from m3search.memory import release_large_allocations
from m3search.server import errors
from m3search.server.engines import EncoderPool, Loader, settings_loader
from m3search.server.metrics import Metrics
from m3search.server.middleware import RequestMiddleware
from m3search.server.routes import catalog, documents, embeddings, finetune, images, ops, search
from m3search.server.service import Service
from m3search.settings import Settings, get_settings
from m3search.store.urls import configured_store

LOGGER = logging.getLogger("m3search.server")


def create_app(settings: Settings | None = None, *, model: str | None = None, preload: bool = False,
               loader: Loader | None = None, db: Path | None = None, store_url: str | None = None) -> FastAPI:
    """A ready-to-serve app.

    Args:
        settings: server settings (default: from the environment now).
        model: the default model of the embedding routes (default: ``settings.default_model``).
        preload: load the model in the background at startup; ``/ready`` answers 503 until it is loaded.
        loader: builds encoders (tests pass a fake); default :func:`~m3search.models.encoders.loader.load_encoder`.
        db: the index database (default: ``settings.index_db``).
        store_url: a store URL instead (``qdrant+edge:///dir``, ``http(s)://host:6333``; default ``settings.store``).
    """
    cfg = settings or get_settings()
    pool = EncoderPool(loader or settings_loader(cfg), model or cfg.default_model)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        release_large_allocations()
        service = Service(cfg, pool, configured_store(cfg, db=db, url=store_url), metrics)
        app.state.service = service
        service.start()
        if preload:
            threading.Thread(target=_preload, args=(pool,), name="m3search-preload", daemon=True).start()
        _resume_jobs(service)
        LOGGER.info("server started", extra={"model": pool.default_model, "auth": bool(cfg.api_keys)})
        try:
            yield
        finally:
            service.stop()
            LOGGER.info("server stopped")

    app = FastAPI(title="m3search", version=__version__, lifespan=lifespan, docs_url=None,
                  description="Local-first embeddings (OpenAI-compatible) and hybrid retrieval around BAAI/bge-m3.")
    errors.install(app)
    for module in (embeddings, catalog, documents, search, images, finetune, ops):
        app.include_router(module.router)
    ops.install_docs(app)
    app.add_middleware(RequestMiddleware, metrics=metrics, api_keys=cfg.api_keys,
                       max_body=cfg.max_request_bytes, max_headers=cfg.max_header_bytes)
    if cfg.cors_origins:  # outermost: a browser's preflight is answered before the API-key check (it carries no key)
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST", "PUT",
                           "DELETE"], allow_headers=["Authorization", "Content-Type", "X-Request-ID"])
    if not cfg.api_keys and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        LOGGER.warning("serving beyond loopback without API keys: anyone who reaches the port can use it; "
                       "set M3SEARCH_API_KEYS", extra={"host": cfg.host})
    return app




def _preload(pool: EncoderPool) -> None:
    try:
        pool.warm_up()
        LOGGER.info("model loaded", extra={"model": pool.default_model})
    except M3SearchError as exc:
        LOGGER.error("model failed to load; /ready stays 503", extra={"model": pool.default_model, "error": str(exc)})


def _resume_jobs(service: Service) -> None:
    """Continue filling the sets that the API started and a previous run did not finish."""
    for name in service.store.collections():
        building = service.store.building_set(name)
        if building is not None and service.store.set_options(building.id).get("origin") == "api":
            catalog.start_fill(service, building)
            LOGGER.info("resumed embedding set", extra={"set_id": building.id, "collection": name})
