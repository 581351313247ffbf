"""``m3search serve``: the HTTP service (extra ``server``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m3search._optional import require
from m3search.cli.index import DbOption, StoreOption, open_store
from m3search.models.local import lookup_spec
from m3search.settings import get_settings


def serve(
    host: Annotated[str | None, typer.Option("--host", help="address to bind (default: M3SEARCH_HOST, 127.0.0.1)")]
    = None,
    port: Annotated[int | None, typer.Option("--port", help="port (default: M3SEARCH_PORT, 8019)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="default model of the embedding routes")] = None,
    preload: Annotated[bool, typer.Option("--preload", help="load the model at startup (/ready is 503 until then)")]
    = False,
    db: DbOption = None,
    store_url: StoreOption = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")] = "info",
) -> None:
    """Serve OpenAI-compatible embeddings, collections and search over HTTP (JSON logs on stderr)."""
    uvicorn = require("uvicorn", "server", "The HTTP server")
    require("fastapi", "server", "The HTTP server")
    from m3search.server.app import create_app
    from m3search.server.logs import configure_logging
    from m3search.server.timeouts import server_options

    overrides: dict[str, object] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = get_settings(**overrides)
    lookup_spec(model or settings.default_model, settings)  # an unknown model is exit 2 now, not an error per request
    open_store(db, store_url).close()  # an unusable store too (opened again by the app)
    configure_logging(log_level)
    app = create_app(settings, model=model, preload=preload, db=Path(db) if db else None, store_url=store_url)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                log_level=log_level, timeout_graceful_shutdown=10,
                **server_options(settings.header_timeout, settings.body_timeout))
