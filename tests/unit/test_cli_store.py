"""``m3search index / status / search / delete / reembed / gc`` with the hash model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import run_cli as run
from tests.references import import_or_skip


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "debian.txt").write_text("Debian is a free operating system with a package manager", encoding="utf-8")
    (folder / "flight.md").write_text("Aerodynamic heating of a flat plate in hypersonic flow", encoding="utf-8")
    (folder / "faq.jsonl").write_text('{"_id": "q1", "title": "Upgrade", "text": "How to upgrade a release"}\n',
                                      encoding="utf-8")
    return folder


def test_index_status_search_delete(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "i.sqlite3")
    code, out, _ = run(["index", str(corpus), "-c", "kb", "-m", "hash", "--db", db], capsys)
    assert code == 0 and "3 added, 0 updated, 0 unchanged, 3 chunks" in out
    code, out, _ = run(["index", str(corpus), "-c", "kb", "-m", "hash", "--db", db, "--json"], capsys)
    assert code == 0 and json.loads(out)["unchanged"] == 3 and json.loads(out)["chunks"] == 0
    code, out, _ = run(["status", "-c", "kb", "--db", db, "--json"], capsys)
    status = json.loads(out)
    assert (status["documents"], status["chunks"], status["model"], status["pending"]) == (3, 3, "hash", 0)
    assert len(status["fingerprint"]) == 16 and status["sets"][0]["status"] == "active"
    assert status["sets"][0]["progress"] == 1.0
    code, out, _ = run(["search", "hypersonic flat plate", "-c", "kb", "-m", "hash", "--db", db, "--k", "1"], capsys)
    assert code == 0 and "flight.md" in out
    code, out, _ = run(["delete", "flight.md", "-c", "kb", "--db", db], capsys)
    assert code == 0 and "deleted 1 of 1" in out
    code, out, err = run(["search", "x", "-c", "kb", "-m", "all-minilm-l6-v2", "--db", db], capsys)
    assert code == 2 and "m3search reembed" in err and len(err.strip().splitlines()) == 1


def test_index_reports_each_skipped_file_and_exits_1(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (corpus / "empty.txt").write_text(" ", encoding="utf-8")
    (corpus / "bin.txt").write_bytes(b"\x00\x01")
    code, out, err = run(["index", str(corpus), "-c", "kb", "-m", "hash", "--db", str(tmp_path / "i.sqlite3")], capsys)
    assert code == 1 and "3 added" in out
    assert "skipped" in out and "empty.txt: empty or whitespace only" in out and "bin.txt: contains NUL" in out
    assert "Traceback" not in err


def test_unknown_collection_and_bad_db_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["status", "-c", "nope", "--db", str(tmp_path / "i.sqlite3")], capsys)
    assert code == 2 and "no collection named 'nope'" in err
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database" * 200)
    code, _, err = run(["status", "--db", str(junk)], capsys)
    assert code == 2 and "cannot open the index database" in err and len(err.strip().splitlines()) == 1


def test_store_urls_and_migrate_store(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same commands on a Qdrant store by URL; migrate-store copies a collection without re-embedding."""
    import_or_skip("qdrant_edge", "qdrant-edge-py is in the dev extra")
    sqlite, edge = f"sqlite:///{tmp_path}/i.sqlite3", f"qdrant+edge:///{tmp_path}/edge"
    code, out, _ = run(["index", str(corpus), "-c", "kb", "-m", "hash", "--store", sqlite], capsys)
    assert code == 0 and "3 added" in out
    code, out, _ = run(["migrate-store", "--from", sqlite, "--to", edge, "--json"], capsys)
    assert code == 0 and json.loads(out) == [{"collection": "kb", "documents": 3, "chunks": 3, "vectors": 3,
                                              "seconds": json.loads(out)[0]["seconds"]}]
    code, out, _ = run(["index", str(corpus), "-c", "kb", "-m", "hash", "--store", edge, "--json"], capsys)
    assert code == 0 and json.loads(out)["unchanged"] == 3  # content hashes came along
    code, out, _ = run(["status", "-c", "kb", "--store", edge, "--json"], capsys)
    assert (json.loads(out)["documents"], json.loads(out)["chunks"], json.loads(out)["pending"]) == (3, 3, 0)
    code, out, _ = run(["search", "hypersonic flat plate", "-c", "kb", "-m", "hash", "--store", edge, "--k", "1"],
                       capsys)
    assert code == 0 and "flight.md" in out
    code, out, _ = run(["search", "flat plate", "-c", "kb", "-m", "hash", "--store", edge, "--fusion", "dbsf",
                        "--json"], capsys)
    assert code == 0 and json.loads(out)["fusion"] == "dbsf" and json.loads(out)["hits"]
    code, _, err = run(["search", "plate", "-c", "kb", "-m", "hash", "--store", edge, "--fusion", "magic"], capsys)
    assert code == 2 and "fusion must be one of max, rrf, dbsf, minmax" in err
    code, _, err = run(["search", "plate", "-c", "kb", "-m", "hash", "--store", edge, "-s", "two_stage"], capsys)
    assert code == 2 and "not supported by Qdrant stores" in err
    code, _, err = run(["migrate-store", "--from", sqlite, "--to", edge], capsys)
    assert code == 2 and "already exists in the target store" in err and "Traceback" not in err
    code, _, err = run(["status", "-c", "kb", "--store", "mysql://x/y"], capsys)
    assert code == 2 and "unknown store URL" in err
    code, _, err = run(["status", "-c", "kb", "--store", edge, "--db", str(tmp_path / "x.db")], capsys)
    assert code == 2 and "not both" in err
