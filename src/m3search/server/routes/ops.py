"""Liveness, readiness, Prometheus metrics, and the search page."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.staticfiles import StaticFiles

from m3search.server.routes.common import service_of

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers (open even when API keys are configured)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "the configured model is not loaded yet"}})
async def ready(request: Request) -> JSONResponse:
    """Readiness: 200 once the configured model is loaded (``--preload`` loads it at startup), else 503."""
    pool = service_of(request).pool
    loaded = pool.is_warm()
    return JSONResponse({"status": "ready" if loaded else "loading", "model": pool.default_model},
                        status_code=200 if loaded else 503)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests, latencies, merged batch sizes, queue depth, tokens."""
    return Response(service_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The search page (static HTML and JavaScript; it calls the JSON API)."""
    return HTMLResponse(resources.files("m3search.server").joinpath("static/index.html").read_text("utf-8"))


def install_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI 5 from the ``fastapi-offline`` package's files (these machines, and many users', have
    no internet), or from FastAPI's default CDN when that package is missing."""
    urls: dict[str, Any] = {}
    try:
        import fastapi_offline
    except ImportError:
        pass
    else:
        app.mount("/static/swagger", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"),
                  name="swagger")
        urls = {"swagger_js_url": "/static/swagger/swagger-ui-bundle.js",
                "swagger_css_url": "/static/swagger/swagger-ui.css",
                "swagger_favicon_url": "/static/swagger/favicon.png"}

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="m3search API", **urls)

    app.add_api_route("/docs", docs, include_in_schema=False, response_class=HTMLResponse)
