"""Issue 19, the CLI's sharp edges: undecodable names and arguments, a collection's own model and precision as
defaults, exit codes (1 = done with some inputs skipped), limits defined once, messages in the caller's
vocabulary, suggestions that work, ``eval --save-run DIR``."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m3search import limits
from m3search.errors import CollectionNotFoundError, InputTooLongError, ModelMismatchError, ParameterError
from m3search.models.encoders.base import Encoder
from m3search.models.registry import get_spec
from m3search.retrieval.beir import read_run
from m3search.retrieval.types import SearchRequest
from m3search.server import schemas
from m3search.server.errors import translate
from tests.cli import run_cli as run
from tests.conftest import FakeM3Encoder


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "debian.txt").write_text("Debian is a free operating system with a package manager", encoding="utf-8")
    (folder / "flight.md").write_text("Aerodynamic heating of a flat plate in hypersonic flow", encoding="utf-8")
    return folder


def test_undecodable_file_name_is_skipped_and_the_rest_indexed(corpus: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (corpus / os.fsdecode(b"caf\xe9.txt")).write_text("a Latin-1 file name", encoding="utf-8")
    db = str(tmp_path / "i.sqlite3")
    code, out, err = run(["index", str(corpus), "-c", "kb", "-m", "hash", "--db", db, "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and report["added"] == 2 and "Traceback" not in err
    assert [p["source"] for p in report["problems"]] == [f"{corpus}/caf\\xe9.txt"]
    assert "not valid UTF-8" in report["problems"][0]["reason"]
    code, out, _ = run(["status", "-c", "kb", "--db", db, "--json"], capsys)
    assert code == 0 and json.loads(out)["documents"] == 2


def test_lone_surrogate_escapes_in_jsonl_are_skipped_not_a_traceback(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "a\\ud800", "text": "x"}\n{"_id": "b", "text": "y", "title": "t\\udc00"}\n'
                      '{"_id": "c", "text": "z", "metadata": {"k\\ud800": 1}}\n{"_id": "d", "text": "caf\\u00e9"}\n',
                      encoding="utf-8")
    code, out, err = run(["index", str(corpus), "-c", "kb", "-m", "hash", "--db", str(tmp_path / "i.sqlite3"),
                          "--json"], capsys)
    report = json.loads(out)
    assert code == 1 and report["added"] == 1 and "Traceback" not in err
    assert [p["source"] for p in report["problems"]] == [f"{corpus}:{n}" for n in (1, 2, 3)]
    assert all("lone surrogate" in p["reason"] for p in report["problems"])


def test_undecodable_argument_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["embed", "-m", "hash", os.fsdecode(b"caf\xe9")], capsys)
    assert code == 2 and out == "" and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "argument 'caf\\xe9' is not valid UTF-8" in err


def test_exit_codes_partial_is_1_usage_is_2(corpus: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "i.sqlite3")
    (corpus / "empty.txt").write_text(" ", encoding="utf-8")
    assert run(["index", str(corpus), "-c", "kb", "-m", "hash", "--db", db], capsys)[0] == 1  # done, 1 skipped
    assert run(["index", str(corpus), "-c", "kb", "-m", "hash", "--db", db, "--no-such-flag"], capsys)[0] == 2
    assert run(["index", str(tmp_path / "nothing"), "-c", "kb", "-m", "hash", "--db", db], capsys)[0] == 2
    code, out, err = run(["delete", "flight.md", "missing-id", "-c", "kb", "--db", db], capsys)
    assert code == 1 and "deleted 1 of 2" in out and "not found missing-id" in out
    code, out, _ = run(["delete", "debian.txt", "-c", "kb", "--db", db], capsys)
    assert code == 0 and "deleted 1 of 1" in out
    code, _, err = run(["delete", "x", "-c", "nope", "--db", db], capsys)
    assert code == 2 and "no collection named 'nope'" in err


def test_a_bug_exits_70_with_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("m3search.cli.index.collection_status", broken)
    code, _, err = run(["status", "-c", "kb", "--db", str(tmp_path / "i.sqlite3")], capsys)
    assert code == 70 and "Traceback" in err and "RuntimeError: a bug" in err


def test_an_existing_collection_keeps_its_own_model(corpus: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`index -c kb` and `search -c kb` without --model use kb's model, not M3SEARCH_DEFAULT_MODEL (bge-m3)."""
    db = str(tmp_path / "i.sqlite3")
    assert run(["index", str(corpus / "debian.txt"), "-c", "kb", "-m", "hash", "--db", db], capsys)[0] == 0
    code, out, err = run(["index", str(corpus), "-c", "kb", "--db", db], capsys)
    assert code == 0 and "1 added" in out and "1 unchanged" in out, err
    code, out, err = run(["search", "hypersonic plate", "-c", "kb", "--db", db, "--k", "1"], capsys)
    assert code == 0 and "flight.md" in out, err


@pytest.fixture
def fake_models(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """``load_encoder`` of the CLI gives deterministic BGE-M3-like encoders (dense, sparse, ColBERT) with the
    precision asked for (default int8-dynamic, as M3SEARCH_PRECISION); returns the precisions asked for."""
    asked: list[str | None] = []

    def load(name: str | None = None, *, dim: int | None = None, precision: str | None = None,
             **_: object) -> Encoder:
        asked.append(precision)
        encoder = FakeM3Encoder(replace(get_spec(name or "bge-m3"), max_tokens=64), dim=dim)
        encoder.precision = precision or "int8-dynamic"  # type: ignore[attr-defined]
        return encoder

    monkeypatch.setattr("m3search.cli.index.load_encoder", load)
    return asked


def test_a_collection_switched_to_fp32_is_searched_in_fp32(corpus: Path, tmp_path: Path, fake_models: list[str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "i.sqlite3")
    assert run(["index", str(corpus), "-c", "kb", "--db", db], capsys)[0] == 0
    code, out, err = run(["reembed", "-c", "kb", "-m", "bge-m3", "--precision", "fp32", "--db", db], capsys)
    assert code == 0, err
    code, out, err = run(["search", "hypersonic plate", "-c", "kb", "--db", db, "--k", "1"], capsys)
    assert code == 0 and "flight.md" in out, err
    code, out, err = run(["search", "hypersonic plate", "-c", "kb", "-m", "bge-m3", "--db", db, "--k", "1"], capsys)
    assert code == 0 and "flight.md" in out, err
    assert fake_models[-2:] == ["fp32", "fp32"]
    code, _, err = run(["search", "plate", "-c", "kb", "--precision", "int8", "--db", db], capsys)
    assert code == 2 and "holds vectors of bge-m3 (fp32" in err  # an explicit other precision is still refused


def test_suggested_strategies_and_commands_work(corpus: Path, tmp_path: Path, fake_models: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "i.sqlite3")
    assert run(["index", str(corpus), "-c", "dense-only", "-m", "hash", "--db", db], capsys)[0] == 0
    code, _, err = run(["search", "plate", "-c", "dense-only", "-s", "all", "--db", db], capsys)
    assert code == 2 and "--colbert" not in err and "hash cannot make sparse, colbert" in err
    suggested = re.search(r"use one of ([\w, ]+)$", err.strip())
    assert suggested is not None
    for strategy in suggested.group(1).split(", "):
        assert run(["search", "plate", "-c", "dense-only", "-s", strategy, "--db", db], capsys)[0] == 0, strategy
    assert run(["index", str(corpus), "-c", "m3", "--db", db], capsys)[0] == 0  # dense + sparse
    code, _, err = run(["search", "plate", "-c", "m3", "-s", "all", "--db", db], capsys)
    command = re.search(r"'m3search (reembed [^']+)'", err)
    assert code == 2 and command is not None, err
    assert run([*command.group(1).split(), "--db", db], capsys)[0] == 0
    assert run(["search", "plate", "-c", "m3", "-s", "all", "--db", db], capsys)[0] == 0


def test_messages_speak_the_callers_vocabulary(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["embed", "-m", "hash", "--max-length", "2", "--on-overflow", "error", "a b c"], capsys)
    assert code == 2 and "--on-overflow truncate" in err and "on_overflow=" not in err
    code, _, err = run(["search", "x", "-c", "kb", "--k", "0"], capsys)
    assert code == 2 and "--k must be an integer from 1 to 1000" in err
    too_long = InputTooLongError(0, 30, 8)
    assert "on_overflow='truncate'" in str(too_long) and "--on-overflow" in too_long.message("cli")
    http = [translate(e).body.decode() for e in (too_long, CollectionNotFoundError("kb"),
                                                 ModelMismatchError("kb", "a", "b"), ParameterError("rerank_k", "x"))]
    assert not any("m3search " in body or "--" in body for body in http), http
    assert '\\"on_overflow\\": \\"truncate\\"' in http[0] and "POST /api/v1/embedding-sets" in http[1]


def test_embed_refuses_empty_text_like_http(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["embed", "-m", "hash", "ok", " "], capsys)
    assert code == 2 and "input 1 is empty or whitespace only" in err


def test_one_limit_per_parameter() -> None:
    fields = schemas.SearchBody.model_fields
    for name, most in (("k", limits.MAX_K), ("candidates", limits.MAX_CANDIDATES),
                       ("coarse_k", limits.MAX_CANDIDATES), ("rerank_k", limits.MAX_RERANK_K)):
        assert any(getattr(m, "le", None) == most for m in fields[name].metadata), name
        SearchRequest(**{name: most, "rerank_k": limits.MAX_RERANK_K, "k": min(most, limits.MAX_K)}).checked()
        with pytest.raises(ParameterError, match=f"from 1 to {most}"):
            SearchRequest(**{name: most + 1}).checked()  # type: ignore[arg-type]
    page = (Path(schemas.__file__).parent / "static" / "index.html").read_text(encoding="utf-8")
    assert f'id="k" name="k" type="number" min="1" max="{limits.MAX_K}"' in page


def test_eval_save_run_into_an_existing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "ds"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in
                                                 enumerate(["wing flow", "debian system", "heat plate"])))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "heat plate"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    code, _, err = run(["eval", str(folder), "-m", "hash", "-s", "bm25,dense", "--save-run", str(runs), "--json"],
                       capsys)
    assert code == 0, err
    assert sorted(p.name for p in runs.iterdir()) == ["bm25.trec", "dense.trec"]
    assert next(iter(read_run(runs / "bm25.trec")["q1"])) == "d2"
    assert not list(tmp_path.glob("runs.*"))


def test_http_errors_name_fields_and_routes_never_cli_commands(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    missing = client.get("/api/v1/collections/nope/documents")
    assert missing.status_code == 404 and "m3search " not in missing.text
    assert client.put("/api/v1/embedding-configs/fake", json={"id": "fake", "model": "hash"}).status_code == 201
    body = {"collection": "nope", "embedding_config_id": "fake"}  # what the 404 says to do: it works
    assert "POST /api/v1/embedding-sets" in missing.json()["error"]["message"]
    assert client.post("/api/v1/embedding-sets", json=body).status_code == 201
    docs = {"documents": [{"id": "a", "text": "hypersonic flow over a flat plate"}]}
    assert client.post("/api/v1/collections/nope/documents", json=docs).status_code == 200
    too_long = client.post("/v1/embeddings", json={"input": "word " * 200, "model": "hash", "on_overflow": "error"})
    assert too_long.status_code == 413 and '"on_overflow": "truncate"' in too_long.json()["error"]["message"]
    for k, status in ((limits.MAX_K, 200), (limits.MAX_K + 1, 400)):
        found = client.post("/api/v1/search", json={"q": "plate", "collection": "nope", "k": k, "strategy": "dense"})
        assert found.status_code == status, found.text
        assert client.get("/api/v1/search", params={"q": "plate", "collection": "nope", "k": k,
                                                     "strategy": "dense"}).status_code == status
    refused = client.post("/api/v1/search", json={"q": "plate", "collection": "nope", "strategy": "all"})
    message = refused.json()["error"]["message"]
    assert refused.status_code == 400 and "--" not in message and "m3search " not in message, message
