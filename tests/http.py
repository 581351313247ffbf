"""Helpers of the HTTP tests: documents to index, and the one error format every error must have."""

from __future__ import annotations

from typing import Any

DOCS = [
    {"id": "wing", "text": "the wing flow stays laminar over the leading edge", "metadata": {"lang": "en"}},
    {"id": "heat", "text": "boundary layer heat transfer at high speed", "metadata": {"lang": "en"}},
    {"id": "flug", "text": "der flugel und die stromung", "metadata": {"lang": "de"}},
]


def expect_error(response: Any, status: int, code: str | None = None) -> str:
    """The error's message, after checking the status, the ``{"error": {message, type, code}}`` shape and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    return str(body["error"]["message"])
