"""Schemathesis against the server's own OpenAPI schema: generated requests on every route, zero 5xx, and every
response conforms to the schema (status codes documented, bodies of the documented shape)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from m3search.server.app import create_app
from m3search.settings import get_settings
from tests.live import live_server
from tests.references import import_or_skip

schemathesis = import_or_skip("schemathesis", "schemathesis is in the dev extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402

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
