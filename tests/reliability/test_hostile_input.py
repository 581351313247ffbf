"""Hostile input, table-driven, at the three edges: HTTP (4xx JSON, never a 5xx), CLI (exit 2, one line, no
traceback) and library (a typed error); in every case nothing is written."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from m3search.errors import DimensionError, DocumentError, InputError, M3SearchError, UnknownModelError
from m3search.ingest.pipeline import index_documents
from m3search.ingest.sources import check_text
from m3search.models.encoders.loader import load_encoder
from m3search.retrieval.search import Searcher
from m3search.server.app import create_app
from m3search.settings import get_settings
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Chunk, Document, EmbeddingConfig, PreparedDocument
from m3search.types import Embedding
from tests.http import DOCS
from tests.live import live_server

TEN_MB = "word " * 2_000_000 + "!"  # one byte over the 10 MB document limit
NESTED = "[" * 100_000 + "]" * 100_000

# (name, method, path, body or raw bytes, expected status)
HTTP_CASES: list[tuple[str, str, str, Any, int]] = [
    ("empty text", "POST", "/v1/embeddings", {"input": ""}, 400),
    ("whitespace-only text", "POST", "/v1/embeddings", {"input": ["ok", " \n\t "]}, 400),
    ("10 MB text, on_overflow=error", "POST", "/v1/embeddings", {"input": TEN_MB, "on_overflow": "error"}, 413),
    ("10 MB document", "POST", "/api/v1/collections/kb/documents",
     {"documents": [{"id": "big", "text": TEN_MB}]}, 400),
    ("invalid UTF-8 body", "POST", "/v1/embeddings", b'{"input": "\xff\xfe"}', 400),
    ("NUL byte in a document", "POST", "/api/v1/collections/kb/documents",
     {"documents": [{"id": "nul", "text": "a\u0000b"}]}, 400),
    ("100k-item batch", "POST", "/v1/embeddings", {"input": ["x"] * 100_000}, 413),
    ("deeply nested JSON", "POST", "/v1/embeddings", NESTED.encode(), 400),
    ("wrong type: input is a number", "POST", "/v1/embeddings", {"input": 42}, 400),
    ("wrong type: k is a string", "POST", "/api/v1/search", {"q": "x", "collection": "kb", "k": "ten"}, 400),
    ("wrong type: filters is a list", "POST", "/api/v1/search", {"q": "x", "collection": "kb", "filters": [1]}, 400),
    ("unknown model", "POST", "/v1/embeddings", {"input": "x", "model": "gpt-17"}, 404),
    ("dimensions not Matryoshka", "POST", "/v1/embeddings", {"input": "x", "dimensions": 50}, 400),
    ("path traversal in a collection", "GET", "/api/v1/collections/..%2F..%2Fetc/documents", None, 404),
    ("path traversal in a document id", "GET", "/api/v1/collections/kb/documents/..%2F..%2Fetc%2Fpasswd", None, 404),
    ("set id beyond 64 bits", "GET", "/api/v1/embedding-sets/99999999999999999999999", None, 400),
    ("unknown strategy", "GET", "/api/v1/search?q=x&collection=kb&strategy=magic", None, 400),
    ("malformed filter", "GET", "/api/v1/search?q=x&collection=kb&filter=novalue", None, 400),
]


def _kb(client: TestClient) -> None:
    client.put("/api/v1/embedding-configs/fake", json={"id": "fake", "model": "hash"})
    assert client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "fake"}
                       ).status_code == 201
    assert client.post("/api/v1/collections/kb/documents", json={"documents": DOCS}).status_code == 200


@pytest.mark.parametrize("name,method,path,body,status", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_http_hostile_input(make_client: Callable[..., TestClient], record: Callable[..., None], name: str,
                            method: str, path: str, body: Any, status: int) -> None:
    client = make_client()
    _kb(client)
    before = client.get("/api/v1/collections/kb").json()
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    response = client.request(method, path, content=raw, headers={"Content-Type": "application/json"})
    record("hostile_http", name, response.status_code)
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["message"] and "Traceback" not in response.text
    assert client.get("/api/v1/collections/kb").json() == before  # nothing written


def test_oversized_headers_are_refused_by_the_server(fake_loader: Callable[..., Any], tmp_path: Path,
                                                     record: Callable[..., None]) -> None:
    app = create_app(get_settings(), model="hash", loader=fake_loader, db=tmp_path / "h.sqlite3")
    with live_server(app) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
            reply = sock.recv(300).decode("latin-1")
    record("hostile_http", "200 KB header", reply.split("\r\n", 1)[0])
    assert reply.startswith("HTTP/1.1 431"), reply


CLI = [sys.executable, "-c", "from m3search.cli.app import main; main()"]


def _cli(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {"M3SEARCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}  # the code under test, not an install
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_hostile_input(tmp_path: Path, record: Callable[..., None]) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "bad.txt").write_bytes(b"caf\xe9 au lait")
    (corpus / "nul.txt").write_bytes(b"a\x00b")
    (corpus / "empty.md").write_text("   \n", encoding="utf-8")
    (corpus / "big.txt").write_text("x" * 10_000_001, encoding="utf-8")
    deep = {"id": "deep", "text": "t", "metadata": json.loads("{\"k\": " * 300 + "1" + "}" * 300)}
    (corpus / "hostile.jsonl").write_text(json.dumps(deep) + "\n" + '{"id": "\\ud800", "text": "t"}\n' +
                                          '{"id": "t", "text": "t", "title": "a\\u0000b"}\n', encoding="utf-8")
    db = tmp_path / "i.sqlite3"
    cases = {
        "index of invalid UTF-8, NUL, empty, 10 MB files and hostile JSONL": [
            "index", str(corpus), "-c", "kb", "-m", "hash", "--db", str(db)],
        "unknown model": ["embed", "-m", "gpt-17", "hello"],
        "dimension not Matryoshka": ["embed", "-m", "nomic-embed-text-v1.5", "--dim", "50", "hello"],
        "path traversal in models add": ["models", "add", "../../etc/passwd", str(tmp_path)],
        "models add of a directory without a model": ["models", "add", "all-minilm-l6-v2", str(corpus)],
        "unknown strategy": ["search", "x", "-c", "kb", "-s", "magic", "--db", str(db)],
        "store URL of an unknown kind": ["status", "-c", "kb", "--store", "ftp://x"],
        "search of a collection that does not exist": ["search", "x", "-c", "nope", "--db", str(db)],
    }
    for name, args in cases.items():
        done = _cli(args, tmp_path / "home")
        record("hostile_cli", name, {"exit": done.returncode, "stderr": done.stderr.strip()[:160]})
        assert done.returncode == 2, (name, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.strip(), name
    with SQLiteStore(db) as store:
        assert store.collections() == []  # every file was refused: nothing indexed


def test_library_hostile_input(tmp_path: Path, record: Callable[..., None]) -> None:
    """Encoders embed an empty text as their peers do (sentence-transformers, FlagEmbedding: the conformance tests
    compare it); the layers that take user text refuse it: documents, queries, the server and the CLI."""
    encoder = load_encoder("hash")
    searcher = Searcher(SQLiteStore(tmp_path / "q.sqlite3"), encoder)
    cases: dict[str, tuple[Callable[[], object], type[M3SearchError]]] = {
        "empty document": (lambda: check_text("doc", b"", 1000), DocumentError),
        "whitespace-only document": (lambda: check_text("doc", b"  \n\t", 1000), DocumentError),
        "NUL bytes in a document": (lambda: check_text("doc", b"a\x00b", 1000), DocumentError),
        "invalid UTF-8 document": (lambda: check_text("doc", b"caf\xe9", 1000), DocumentError),
        "10 MB document": (lambda: check_text("doc", TEN_MB.encode(), 10_000_000), DocumentError),
        "empty query": (lambda: searcher.search("kb", "  "), InputError),
        "texts given as one string": (lambda: encoder.encode("a string"), InputError),  # type: ignore[arg-type]
        "token ids instead of texts": (lambda: encoder.encode([[1, 2, 3]]), InputError),  # type: ignore[list-item]
        "unknown model": (lambda: load_encoder("gpt-17"), UnknownModelError),
        "dimension not Matryoshka": (lambda: load_encoder("nomic-embed-text-v1.5", dim=50), DimensionError),
    }
    with SQLiteStore(tmp_path / "l.sqlite3") as store:
        config = EmbeddingConfig("hash", "0", 8)
        target = store.create_collection("kb", config, 64, 0)
        wrong = Embedding(1, False, np.ones(9, dtype=np.float32))
        deep: dict[str, object] = {"leaf": 1}
        for _ in range(300):
            deep = {"k": deep}
        for name, doc in (("lone surrogate in a document id", Document("\ud800", "text", "s")),
                          ("NUL in a document title", Document("d", "text", "s", "a\x00b")),
                          ("metadata nested 300 levels", Document("d", "text", "s", "", deep))):
            cases[name] = (lambda doc=doc: index_documents(store, encoder, "kb", [doc]), DocumentError)  # type: ignore[misc]
        cases["wrong-dimension vector"] = (lambda: store.write_documents(target, [PreparedDocument(
            Document("d", "t", "s"), [Chunk(0, "t", 0, 1, 1)], [wrong])]), DimensionError)
        for name, (call, kind) in cases.items():
            with pytest.raises(kind) as caught:
                call()
            record("hostile_library", name, type(caught.value).__name__)
        assert store.counts("kb") == (0, 0)
