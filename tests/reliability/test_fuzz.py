"""Schemathesis against the server's own OpenAPI schema: generated requests on every route, zero 5xx, and every
response conforms to the schema (status codes documented, bodies of the documented shape)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from m3search.server.app import create_app
from m3search.settings import get_settings
from tests.live import live_server

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the dev extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.core import NotSet  # noqa: E402

EXAMPLES = 75  # per operation (fewer where the inputs run out): > 1000 requests over ~30 operations
# Responses must conform (status codes, content types, bodies, headers) and schema-invalid requests must get a 4xx.
# Not checked: that every schema-valid request is accepted: the API refuses some schema-valid values with a
# documented 400 (empty texts, OpenAI token arrays, dimensions outside a model's Matryoshka list).
CHECKS = [schemathesis.checks.status_code_conformance, schemathesis.checks.content_type_conformance,
          schemathesis.checks.response_schema_conformance, schemathesis.checks.response_headers_conformance,
          schemathesis.checks.negative_data_rejection]


def _fuzz(operation: Any, base: str, counts: dict[str, int], failures: list[str]) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        counts["requests"] += 1
        response = case.call(base_url=base, timeout=30)
        where = f"{case.method} {case.formatted_path}"
        if response.status_code >= 500:
            counts["5xx"] += 1
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            return
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseExceptionGroup as exc:  # schema violations (a FailureGroup): counted, reported after the run
            counts["nonconforming"] += 1
            failures.append(f"{where}: {response.status_code} {str(exc).strip().splitlines()[0][:300]}")

    run()


def test_generated_requests_never_get_a_5xx_and_conform_to_the_schema(
        fake_loader: Callable[..., Any], tmp_path: Path, record: Callable[..., None]) -> None:
    app = create_app(get_settings(), model="hash", loader=fake_loader, db=tmp_path / "fuzz.sqlite3")
    counts = {"requests": 0, "5xx": 0, "nonconforming": 0, "operations": 0}
    failures: list[str] = []
    start = time.monotonic()
    with live_server(app) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        counts["operations"] = len(operations)
        for operation in operations:
            _fuzz(operation, base, counts, failures)
    record("fuzz", "schemathesis", {**counts, "seconds": round(time.monotonic() - start, 1),
                                    "examples_per_operation": EXAMPLES})
    assert counts["requests"] >= 1000
    assert not failures, "\n".join(failures[:20])


# Hostile fuzzing (issue 19): the generated requests of every operation, mutated with what an attacker sends ----------

HOSTILE_EXAMPLES = int(os.environ.get("M3SEARCH_FUZZ_EXAMPLES", "40"))  # per operation; make reliability: more
_SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
HOSTILE_TEXT = st.one_of(
    st.text(st.characters(codec=None), max_size=40),  # any code point, surrogates and control characters included
    _SURROGATES.map(lambda s: "ok" + s),
    st.sampled_from(["\ud800", "\udfff", "a\x00b", "\x00", "\U0010ffff", "💥" * 50, "a/b/c.md", "../../etc/passwd",
                     " ", "ǅ" * 1000, "word " * 20_000]),
)
PATH_TEXT = st.one_of(st.text(st.characters(codec="utf-8", exclude_characters="?#"), min_size=1, max_size=30),
                      st.sampled_from(["a\x00b", "sub/dir/file.md", "..", "%2F", "💥"]))


KNOWN = ["kb", "h", "b", "sub/a.md", "1"]  # what the test stores first: path parameters that find something


def _deep(depth: int, kind: str) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


HOSTILE_JSON = st.one_of(
    st.builds(_deep, st.integers(10, 600), st.sampled_from(["list", "dict"])),
    st.dictionaries(HOSTILE_TEXT, st.integers(), min_size=1, max_size=5),
    st.just({f"k{i}": i for i in range(1200)}),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**80), 2**80),
)


def _mutate(value: Any, data: Any, depth: int = 0) -> Any:
    """``value`` with some strings replaced by hostile text, some values by deep or huge JSON, some unknown keys."""
    if isinstance(value, str):
        return data.draw(HOSTILE_TEXT) if data.draw(st.integers(0, 2)) == 0 else value
    if isinstance(value, list) and depth < 4:
        return [_mutate(v, data, depth + 1) for v in value]
    if isinstance(value, dict) and depth < 4:
        out = {k: (data.draw(HOSTILE_JSON) if data.draw(st.integers(0, 7)) == 0 else _mutate(v, data, depth + 1))
               for k, v in value.items()}
        if data.draw(st.integers(0, 5)) == 0:
            out[data.draw(HOSTILE_TEXT)] = data.draw(st.one_of(HOSTILE_JSON, HOSTILE_TEXT))
        return out
    return value


def _hostile_fuzz(operation: Any, base: str, session: Any, counts: dict[str, int], failures: list[str]) -> None:
    pool = session.get_adapter(base).poolmanager.connection_from_url(base)

    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), data=st.data())
    def run(case: Any, data: Any) -> None:
        # Sent by hand: schemathesis re-validates a changed case, and its validators cannot encode a lone surrogate.
        params = {k: data.draw(st.one_of(PATH_TEXT, st.sampled_from(KNOWN), st.just(str(v))))
                  for k, v in (case.path_parameters or {}).items()}
        path = operation.path.format(**{k: quote(v, safe="") for k, v in params.items()})
        body = None
        if not isinstance(case.body, NotSet) and case.body is not None:
            body = json.dumps(_mutate(case.body, data)).encode()
        opened = pool.num_connections
        response = session.request(case.method, f"{base}{path}", params=case.query or None, data=body, timeout=60,
                                   headers={"Content-Type": "application/json"} if body is not None else None)
        counts["requests"] += 1
        counts[f"{response.status_code // 100}xx"] = counts.get(f"{response.status_code // 100}xx", 0) + 1
        where = f"{case.method} {path}"
        if pool.num_connections > opened:  # the server closed the connection after the previous response
            counts["connections_dropped"] += 1
            failures.append(f"{where}: a new connection was needed after a {counts['last_status']}")
        counts["last_status"] = response.status_code
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")

    run()


def _every_document_is_readable(base: str) -> int:
    import httpx

    read = 0
    with httpx.Client(base_url=base, timeout=60) as client:
        for collection in client.get("/api/v1/collections").raise_for_status().json():
            name = quote(collection["collection"], safe="")
            offset = 0
            while page := client.get(f"/api/v1/collections/{name}/documents",
                                     params={"limit": 1000, "offset": offset}).raise_for_status().json()["documents"]:
                for doc in page:
                    # dots escaped too: clients resolve a bare '..' segment before sending (RFC 3986)
                    escaped = quote(doc["id"], safe="").replace(".", "%2E")
                    got = client.get(f"/api/v1/collections/{name}/documents/{escaped}")
                    assert got.status_code == 200 and got.json()["id"] == doc["id"], got.text[:200]
                    read += 1
                offset += len(page)
    return read


def test_hostile_generated_requests_never_get_a_5xx_nor_drop_the_connection(
        fake_loader: Callable[..., Any], tmp_path: Path, record: Callable[..., None]) -> None:
    import requests

    app = create_app(get_settings(), model="hash", loader=fake_loader, db=tmp_path / "hostile.sqlite3")
    counts = {"requests": 0, "connections_dropped": 0, "last_status": 200, "operations": 0}
    failures: list[str] = []
    start = time.monotonic()
    with live_server(app) as base, requests.Session() as session:
        session.put(f"{base}/api/v1/embedding-configs/h", json={"id": "h", "model": "hash"})
        session.post(f"{base}/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "h"})
        session.post(f"{base}/api/v1/embedding-sets", json={"collection": "keep", "embedding_config_id": "h"})
        for name in ("kb", "keep"):  # "kb" is the fuzz's to change; "keep" holds ids a URL must escape
            assert session.post(f"{base}/api/v1/collections/{name}/documents", json={"documents": [
                {"id": doc_id, "text": "wing flow", "metadata": {"lang": "en", "n": [1, {"x": None}]}}
                for doc_id in ["sub/a.md", "b", "100% ?#&=+", "..", "ünïcödé 💥", " x"[1:], "a\\b"]]}).ok
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        # Deletions first, so that what later operations write is still there to be read back at the end.
        operations = sorted((result.ok() for result in schema.get_all_operations()), key=lambda o: o.method != "delete")
        counts["operations"] = len(operations)
        for operation in operations:
            _hostile_fuzz(operation, base, session, counts, failures)
        readable = _every_document_is_readable(base)
    counts.pop("last_status")
    record("fuzz", "hostile", {**counts, "documents_read_back": readable, "seconds": round(time.monotonic() - start, 1),
                               "examples_per_operation": HOSTILE_EXAMPLES})
    assert counts["requests"] >= 20 * HOSTILE_EXAMPLES
    assert not failures, "\n".join(failures[:20])
