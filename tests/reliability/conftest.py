"""The reliability suite's figures: each test adds what it tried and what happened to one JSON report.

``make reliability`` sets ``M3SEARCH_RELIABILITY_OUT`` and turns the JSON into ``benchmarks/results/reliability.md``;
in ``make test`` the figures are collected and dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_FIGURES: dict[str, Any] = {}


@pytest.fixture(scope="session", autouse=True)
def _write_report() -> Iterator[None]:
    yield
    out = os.environ.get("M3SEARCH_RELIABILITY_OUT")
    if out and _FIGURES:
        path = Path(out)
        found = json.loads(path.read_text()) if path.exists() else {}
        found.update(_FIGURES)
        path.write_text(json.dumps(found, indent=2, sort_keys=True))


@pytest.fixture
def record() -> Any:
    """``record(section, key, value)``: one figure of the report."""

    def add(section: str, key: str, value: Any) -> None:
        _FIGURES.setdefault(section, {})[key] = value

    return add


from tests.unit.conftest import client, make_client  # noqa: E402, F401  (the HTTP test clients, shared)
