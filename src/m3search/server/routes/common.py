"""What every route module shares: the service behind the app, the documented error responses, fast JSON."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from m3search.server.schemas import ErrorBody
from m3search.server.service import Service

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 429, 503)}


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def json_response(body: dict[str, Any]) -> Response:
    """Serialised once with the standard library: no per-float validation of large vector lists."""
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")
