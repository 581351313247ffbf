"""The package's top-level API: the search side is importable from ``m3search`` without importing it eagerly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import m3search

ROOT = Path(__file__).resolve().parents[2]
LAZY = {"Searcher": "m3search.retrieval.search", "SearchRequest": "m3search.retrieval.types",
        "open_store": "m3search.store.urls", "index_documents": "m3search.ingest.pipeline",
        "Document": "m3search.store.types", "load_reranker": "m3search.models.rerank.cross_encoder"}
# What `import m3search` must not pull in: inference engines, the store and retrieval layers and their libraries.
HEAVY = ("onnxruntime", "openvino", "torch", "scipy", "sqlite3", "usearch", "qdrant_client", "qdrant_edge",
         "fastapi", "typer", "httpx", "m3search.retrieval", "m3search.store", "m3search.server", "m3search.cli")

_PROBE = """
import json, sys
import m3search
before = sorted(sys.modules)
names = {name: getattr(m3search, name).__module__ for name in NAMES}
print(json.dumps({"before": before, "names": names}))
"""


def test_import_is_light_and_every_search_name_resolves_to_its_module() -> None:
    probe = _PROBE.replace("NAMES", repr(sorted(LAZY)))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    seen = json.loads(out.stdout)
    loaded = [m for m in seen["before"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == [], f"`import m3search` imports {loaded}"
    assert seen["names"] == LAZY


def test_lazy_names_are_in_all_and_dir_and_are_the_defining_objects() -> None:
    import importlib

    for name, module in LAZY.items():
        assert name in m3search.__all__ and name in dir(m3search)
        assert getattr(m3search, name) is getattr(importlib.import_module(module), name)
    namespace: dict[str, object] = {}
    exec("from m3search import *", namespace)  # every name of __all__ resolves
    assert set(m3search.__all__) <= set(namespace)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Searchr'"):
        _ = m3search.Searchr  # type: ignore[attr-defined]
    assert not hasattr(m3search, "retrieval_search")


def test_python_dash_m_runs_the_command_line() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "m3search", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Usage: m3search" in done.stdout and "search" in done.stdout
