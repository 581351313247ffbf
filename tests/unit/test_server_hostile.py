"""Issue 19's server rows, one regression test each: hostile request bodies get a 400 naming the problem and write
nothing; CORS preflights pass API keys; document ids with '/' are reachable; a PUT keeps ``created``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.http import DOCS
from tests.http import expect_error as _error

KB = "/api/v1/collections/kb"


def _kb(client: TestClient) -> None:
    client.put("/api/v1/embedding-configs/fake", json={"id": "fake", "model": "hash"})
    assert client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "fake"}
                       ).status_code == 201
    assert client.post(f"{KB}/documents", json={"documents": DOCS}).status_code == 200


def _post(client: TestClient, path: str, body: Any, method: str = "POST") -> Any:
    """``body`` sent as JSON text with its escapes kept (``"\\ud800"`` stays a lone surrogate for the server)."""
    return client.request(method, path, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


# Row 1: a huge input is cut before it is tokenized whole -----------------------------------------------------------


def test_a_huge_input_is_cut_and_reported_as_truncated(client: TestClient) -> None:
    text = "word " * 3_000_000  # 15 MB, under the body limit
    got = client.post("/api/v1/encode", json={"texts": [text, "word " * 10]})
    assert got.status_code == 200, got.text[:300]
    long, short = got.json()["data"]
    assert long["truncated"] is True and long["tokens"] == 64  # the fake model's max_tokens
    assert short["truncated"] is False and short["tokens"] == 10
    refused = client.post("/api/v1/encode", json={"texts": [text], "on_overflow": "error"})
    assert "3000000 tokens" in _error(refused, 413, "input_too_long")  # the count is still exact for words


# Row 2: bounded depth and size for every JSON field ----------------------------------------------------------------


@pytest.mark.parametrize("metadata,says", [
    (_nested(300), "nested more than"),
    (_nested(20), "nested more than 16"),
    ({f"k{i}": i for i in range(1001)}, "more than 1000 keys"),
    ({"big": "x" * 70_000}, "larger than 65536"),
    ({"k" * 300: 1}, "more than the limit of 256"),
], ids=["300 levels", "20 levels", "1001 keys", "70k characters", "300-character key"])
def test_metadata_beyond_the_json_limits_is_refused_on_write(client: TestClient, metadata: Any, says: str) -> None:
    _kb(client)
    before = client.get(KB).json()
    message = _error(_post(client, f"{KB}/documents", {"documents": [{"id": "deep", "text": "t",
                                                                       "metadata": metadata}]}), 400)
    assert says in message and "metadata" in message
    assert client.get(KB).json() == before
    _error(_post(client, f"{KB}/documents/wing", {"text": "t", "metadata": metadata}, "PUT"), 400)
    _error(_post(client, "/api/v1/search", {"q": "wing", "collection": "kb", "filters": metadata}), 400)
    assert client.get(f"{KB}/documents").status_code == 200 and client.get(f"{KB}/documents/wing").status_code == 200


def test_metadata_within_the_limits_is_stored_and_read_back(client: TestClient) -> None:
    _kb(client)
    metadata = {"nested": _nested(10), "list": list(range(100)), "text": "x" * 10_000}
    assert _post(client, f"{KB}/documents", {"documents": [{"id": "ok", "text": "t", "metadata": metadata}]}
                 ).status_code == 200
    assert client.get(f"{KB}/documents/ok").json()["metadata"] == metadata
    assert client.get(f"{KB}/documents").status_code == 200


# Row 3: lone surrogates and NUL in every string field of every route -----------------------------------------------

BAD = {"surrogate": "\ud800", "NUL": "a\u0000b"}
FIELDS: list[tuple[str, str, Callable[[str], Any]]] = [
    ("/v1/embeddings input", "/v1/embeddings", lambda s: {"input": s}),
    ("/v1/embeddings input list", "/v1/embeddings", lambda s: {"input": ["ok", s]}),
    ("/v1/embeddings model", "/v1/embeddings", lambda s: {"input": "ok", "model": s}),
    ("/v1/embeddings user", "/v1/embeddings", lambda s: {"input": "ok", "user": s}),
    ("/embeddings texts", "/embeddings", lambda s: {"texts": [s]}),
    ("/embeddings model", "/embeddings", lambda s: {"texts": ["ok"], "model": s}),
    ("/api/v1/encode texts", "/api/v1/encode", lambda s: {"texts": [s]}),
    ("document text", f"{KB}/documents", lambda s: {"documents": [{"id": "x", "text": s}]}),
    ("document id", f"{KB}/documents", lambda s: {"documents": [{"id": s, "text": "t"}]}),
    ("document title", f"{KB}/documents", lambda s: {"documents": [{"id": "x", "text": "t", "title": s}]}),
    ("metadata key", f"{KB}/documents", lambda s: {"documents": [{"id": "x", "text": "t", "metadata": {s: 1}}]}),
    ("metadata value", f"{KB}/documents", lambda s: {"documents": [{"id": "x", "text": "t", "metadata": {"k": [s]}}]}),
    ("search q", "/api/v1/search", lambda s: {"q": s, "collection": "kb"}),
    ("search collection", "/api/v1/search", lambda s: {"q": "wing", "collection": s}),
    ("search filters", "/api/v1/search", lambda s: {"q": "wing", "collection": "kb", "filters": {"lang": s}}),
    ("search rerank", "/api/v1/search", lambda s: {"q": "wing", "collection": "kb", "rerank": s}),
    ("config model", "/api/v1/embedding-configs", lambda s: {"id": "c", "model": s}),
    ("config description", "/api/v1/embedding-configs", lambda s: {"id": "c", "model": "hash", "description": s}),
    ("set config id", "/api/v1/embedding-sets", lambda s: {"collection": "kb2", "embedding_config_id": s}),
    ("image collection", "/api/v1/search/image", lambda s: {"image": "aGk=", "collection": s}),
    ("fine-tuning collection", "/api/v1/fine-tuning/generate", lambda s: {"collection": s}),
]


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("name,path,body", FIELDS, ids=[f[0] for f in FIELDS])
def test_lone_surrogates_and_nul_are_a_400_everywhere(client: TestClient, name: str, path: str,
                                                      body: Callable[[str], Any], kind: str) -> None:
    _kb(client)
    before = client.get(f"{KB}/documents").json()
    message = _error(_post(client, path, body(BAD[kind])), 400)
    assert ("lone surrogate" if kind == "surrogate" else "NUL") in message
    assert client.get(f"{KB}/documents").json() == before


# Row 4: a browser's preflight is answered before the API-key check -------------------------------------------------


def test_cors_preflight_is_answered_before_api_key_auth(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=["secret"], cors_origins=["http://app.local"])
    preflight = client.options("/v1/embeddings", headers={
        "Origin": "http://app.local", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == "http://app.local"
    refused = client.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": "http://app.local"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "http://app.local"
    allowed = client.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": "http://app.local",
                                                                           "Authorization": "Bearer secret"})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.local"


# Row 5: unknown fields are a 400 naming them; a PUT's id must match its path ---------------------------------------


@pytest.mark.parametrize("path,body,field", [
    ("/api/v1/search", {"q": "wing", "collection": "kb", "filter": {"lang": "en"}}, "filter"),
    (f"{KB}/documents", {"documents": [{"id": "x", "text": "t", "metdata": {"lang": "en"}}]}, "metdata"),
    ("/v1/embeddings", {"input": "x", "dimension": 32}, "dimension"),
    ("/api/v1/encode", {"texts": ["x"], "output": ["sparse"]}, "output"),
    ("/api/v1/embedding-sets", {"collection": "kb2", "embedding_config_id": "fake",
                                "auto_embed_rules": {"on_craete": False}}, "on_craete"),
], ids=["search filter", "document metdata", "embeddings dimension", "encode output", "set rules typo"])
def test_unknown_fields_are_refused_by_name(client: TestClient, path: str, body: Any, field: str) -> None:
    _kb(client)
    before = client.get(f"{KB}/documents").json()
    message = _error(_post(client, path, body), 400, "invalid_request")
    assert field in message and "Extra inputs are not permitted" in message
    assert client.get(f"{KB}/documents").json() == before


def test_a_put_whose_body_names_another_id_is_refused(client: TestClient) -> None:
    _kb(client)
    before = client.get(f"{KB}/documents/wing").json()
    message = _error(_post(client, f"{KB}/documents/wing", {"id": "other", "text": "new"}, "PUT"), 400)
    assert "'other'" in message and "'wing'" in message
    assert client.get(f"{KB}/documents/wing").json() == before
    assert client.get(f"{KB}/documents/other").status_code == 404
    assert _post(client, f"{KB}/documents/wing", {"id": "wing", "text": "new text"}, "PUT").json()["updated"] == 1


# Row 6: every stored id is reachable, '/' included -------------------------------------------------------------------


def test_document_ids_with_slashes_are_reachable(client: TestClient) -> None:
    _kb(client)
    assert _post(client, f"{KB}/documents", {"documents": [{"id": "sub/dir/file.md", "text": "wing"}]}
                 ).status_code == 200
    path = f"{KB}/documents/sub%2Fdir%2Ffile.md"
    assert client.get(path).json()["id"] == "sub/dir/file.md"
    assert _post(client, path, {"text": "a new wing text"}, "PUT").json()["updated"] == 1
    assert client.get(f"{KB}/documents/sub/dir/file.md").json()["id"] == "sub/dir/file.md"  # unencoded too
    assert client.delete(path).status_code == 204
    assert client.get(path).status_code == 404


# Row 10: a PUT keeps ``created`` and sets ``updated`` ---------------------------------------------------------------


def test_put_keeps_created_and_sets_updated(client: TestClient, tmp_path: Path) -> None:
    _kb(client)
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:  # the make_client fixture's database
        db.execute("UPDATE documents SET created = '2000-01-01 00:00:00', updated = '2000-01-01 00:00:00'")
    order = [d["id"] for d in client.get(f"{KB}/documents").json()["documents"]]
    assert _post(client, f"{KB}/documents/wing", {"text": "the wing changed"}, "PUT").json()["updated"] == 1
    doc = client.get(f"{KB}/documents/wing").json()
    assert doc["created"] == "2000-01-01 00:00:00" and doc["updated"] > "2000-01-01 00:00:00"
    assert [d["id"] for d in client.get(f"{KB}/documents").json()["documents"]] == order  # same place in listings
