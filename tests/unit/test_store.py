"""The SQLite store with the deterministic hash encoder: schema, ingestion, atomicity, model changes."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import (
    CollectionNotFoundError,
    ConfigError,
    DimensionError,
    ModelMismatchError,
    SchemaVersionError,
    StoreError,
)
from m3search.ingest.chunking import chunk_text
from m3search.ingest.pipeline import config_for, index_documents
from m3search.ingest.reembed import reembed
from m3search.ingest.sources import read_sources
from m3search.models.encoders.hashing import HashEncoder
from m3search.models.registry import get_spec
from m3search.store.schema import VERSION
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document, PreparedDocument
from m3search.types import Embedding
from tests.store_search import search_dense, search_sparse, search_text

FIXTURES = Path(__file__).parent.parent / "fixtures"
WORDS = ["debian", "package", "kernel", "release", "upgrade", "mirror", "archive", "boot", "network", "install",
         "security"]


def _encoder(name: str = "hash", dim: int = 384) -> HashEncoder:
    return HashEncoder(replace(get_spec("hash"), name=name, dim=dim), max_length=64)


def _docs(n: int, words: int = 30, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [Document(f"d{i}", " ".join(rng.choice(WORDS, words)), "test") for i in range(n)]


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    with SQLiteStore(tmp_path / "index.sqlite3") as opened:
        yield opened  # type: ignore[misc]


def _all_chunks(path: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(path)
    return db.execute("SELECT d.doc_id, count(*) FROM chunks k JOIN documents d ON d.id = k.document_id "
                      "GROUP BY d.doc_id ORDER BY d.doc_id").fetchall()


# schema ------------------------------------------------------------------------------------------

def test_new_database_is_current_and_in_wal_mode(store: SQLiteStore) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_older_schema_migrates_without_losing_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    shutil.copy(FIXTURES / "index_v1.sqlite3", path)
    with SQLiteStore(path) as store:
        assert store.collections() == ["old"]
        assert store.counts("old") == (2, 2)
        ids, matrix = store.dense_matrix(store.active_set("old"))
        assert ids == [1, 2] and matrix[0, 1] == 1.0 and matrix[1, 2] == 1.0
        hits = store.hits(search_text(store, "old", "aerodynamic", 5))  # the FTS index was filled from existing chunks
        assert [h.doc_id for h in hits] == ["doc2"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == VERSION


def test_the_postings_table_is_dropped_by_a_migration(tmp_path: Path) -> None:
    """A database of the old schema (its postings table filled) loses the table and the trigger that kept it in step
    with deleted chunks; documents, vectors and deletes keep working."""
    path = tmp_path / "old.sqlite3"
    shutil.copy(FIXTURES / "index_v1.sqlite3", path)
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO postings VALUES (?, ?, ?, ?)", [(1, 7, 1, 0.5), (1, 9, 2, 0.25)])
    with SQLiteStore(path) as store:
        names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
        assert "postings" not in names and "postings_delete" not in names and "postings_by_chunk" not in names
        assert {"chunks", "sparse_vectors", "dense_vectors", "chunks_fts", "set_options"} <= names
        assert store.delete_documents("old", ["doc1"]) == 1  # the trigger on chunks is gone with its table
        assert store.counts("old") == (1, 1) and store.dense_matrix(store.active_set("old"))[0] == [2]


def test_newer_database_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {VERSION + 1}")
    with pytest.raises(SchemaVersionError, match="upgrade m3search"):
        SQLiteStore(path)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(path)


# chunking and sources ----------------------------------------------------------------------------

def test_chunks_overlap_and_keep_their_spans() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_text(text, _encoder().tokenizer, chunk_tokens=30, overlap=5)
    assert len(chunks) == 4 and all(c.tokens <= 30 for c in chunks)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    assert chunks[0].text.split()[-5:] == chunks[1].text.split()[:5]
    assert chunks[-1].text.endswith("w99")
    with pytest.raises(ConfigError):
        chunk_text(text, _encoder().tokenizer, chunk_tokens=10, overlap=10)


def test_bad_sources_are_reported_and_good_ones_read(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("debian kernel", encoding="utf-8")
    (tmp_path / "notes.md").write_text("# title\nupgrade mirror", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "nul.txt").write_bytes(b"abc\x00def")
    (tmp_path / "big.txt").write_text("x" * 2000, encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "a", "title": "T", "text": "boot network", "metadata": {"lang": "en"}}\n'
        '{"_id": "a", "text": "again"}\n{"id": 7, "text": "install security"}\nnot json\n{"_id": "b"}\n'
        '{"_id": "c", "text": ""}\n', encoding="utf-8")
    sources = read_sources([tmp_path, tmp_path / "missing"], max_bytes=1000)
    assert sorted(d.doc_id for d in sources.documents) == ["7", "a", "good.txt", "notes.md"]
    reasons = {Path(p.source.split(":")[0]).name + (":" + p.source.split(":")[1] if ":" in p.source else ""):
               p.reason for p in sources.problems}
    assert reasons["empty.txt"] == "empty or whitespace only"
    assert reasons["latin1.txt"].startswith("not valid UTF-8")
    assert reasons["nul.txt"].startswith("contains NUL bytes")
    assert reasons["big.txt"].startswith("larger than 1000 bytes")
    assert reasons["image.png"].startswith("unsupported type")
    assert reasons["corpus.jsonl:2"] == "duplicate id 'a' in this file"
    assert reasons["corpus.jsonl:4"].startswith("invalid JSON")
    assert reasons["corpus.jsonl:5"] == "no 'text' string"
    assert reasons["corpus.jsonl:6"] == "empty or whitespace only"
    assert reasons["missing"] == "no such file or directory"
    a = next(d for d in sources.documents if d.doc_id == "a")
    assert a.title == "T" and a.metadata == {"lang": "en"}


# ingestion ---------------------------------------------------------------------------------------

def test_index_is_idempotent_and_updates_changed_documents(store: SQLiteStore) -> None:
    encoder, docs = _encoder(), _docs(20, words=150)
    first = index_documents(store, encoder, "kb", docs, batch_docs=8)
    assert (first.added, first.updated, first.unchanged) == (20, 0, 0) and first.chunks > 20
    assert store.counts("kb") == (20, first.chunks)
    again = index_documents(store, encoder, "kb", docs)
    assert (again.added, again.updated, again.unchanged, again.chunks) == (0, 0, 20, 0)
    changed = [*docs[:19], Document("d19", "a completely new text about mirrors", "test")]
    third = index_documents(store, encoder, "kb", changed)
    assert (third.added, third.updated, third.unchanged, third.chunks) == (0, 1, 19, 1)
    documents, chunks = store.counts("kb")
    assert documents == 20 and chunks == first.chunks - (len(chunk_text(docs[19].text, encoder.tokenizer, 64, 8)) - 1)
    hits = search_dense(store, "kb", config_for(encoder, ["dense"]),
                              encoder.encode(["completely new text about mirrors"])[0].dense, 1)  # type: ignore[arg-type]
    assert hits[0].doc_id == "d19"


def test_a_failing_batch_writes_nothing(store: SQLiteStore) -> None:
    encoder = _encoder()
    index_documents(store, encoder, "kb", _docs(2))
    target = store.active_set("kb")
    good = encoder.encode(["debian"])[0]
    wrong = Embedding(tokens=1, truncated=False, dense=np.ones(10, dtype=np.float32))
    docs = [Document("x1", "debian", "t"), Document("x2", "kernel", "t")]
    chunks = [chunk_text(d.text, encoder.tokenizer, 64, 8) for d in docs]
    with pytest.raises(DimensionError, match="10-d vector"):
        store.write_documents(target, [PreparedDocument(docs[0], chunks[0], [good]),
                                       PreparedDocument(docs[1], chunks[1], [wrong])])
    assert store.counts("kb") == (2, 2)
    with pytest.raises(ValueError):
        store.write_documents(target, [PreparedDocument(docs[0], chunks[0], [good]),
                                       PreparedDocument(docs[1], chunks[1], [])])  # zip(strict) fails mid-way
    assert store.counts("kb") == (2, 2) and "x1" not in store.content_hashes("kb")


def test_delete_removes_chunks_and_vectors(store: SQLiteStore) -> None:
    index_documents(store, _encoder(), "kb", _docs(5))
    assert store.delete_documents("kb", ["d1", "d3", "nope"]) == 2
    assert store.counts("kb") == (3, 3)
    assert len(store.dense_matrix(store.active_set("kb"))[0]) == 3
    with pytest.raises(CollectionNotFoundError, match="m3search index"):
        store.delete_documents("other", ["d1"])


# model changes -----------------------------------------------------------------------------------

def test_same_dimension_other_model_is_refused(store: SQLiteStore) -> None:
    index_documents(store, _encoder(), "kb", _docs(3))
    other = _encoder("hash-b")  # also 384-d: the fingerprint, not the dimension, tells them apart
    with pytest.raises(ModelMismatchError, match="m3search reembed --collection kb"):
        index_documents(store, other, "kb", _docs(3))
    with pytest.raises(ModelMismatchError):
        search_dense(store, "kb", config_for(other, ["dense"]), np.zeros(384, dtype=np.float32), 3)


def test_reembed_switches_atomically_and_resumes(tmp_path: Path) -> None:
    old, new = _encoder(), _encoder("hash-64", dim=64)
    docs = _docs(30, words=100)
    paths = [tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"]
    for path in paths:
        with SQLiteStore(path) as store:
            index_documents(store, old, "kb", docs)
    with SQLiteStore(paths[0]) as store:  # uninterrupted
        report = reembed(store, new, "kb", batch=7)
        assert report.activated and report.embedded == store.counts("kb")[1]
    with SQLiteStore(paths[1]) as store:  # killed after two batches, then resumed
        calls = []

        def crash(done: int, total: int) -> None:
            calls.append(done)
            if len(calls) == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            reembed(store, new, "kb", batch=7, progress=crash)
        building = store.building_set("kb")
        assert building is not None and store.vector_count(building) == 14
        assert store.active_set("kb").config.model == "hash"  # searches still use the old set
        search_dense(store, "kb", config_for(old, ["dense"]), old.encode(["debian"])[0].dense, 3)  # type: ignore[arg-type]
        resumed = reembed(store, new, "kb", batch=7)
        assert resumed.activated and resumed.embedded == store.counts("kb")[1] - 14
    states = []
    for path in paths:
        with SQLiteStore(path) as store:
            active = store.active_set("kb")
            ids, matrix = store.dense_matrix(active)
            states.append((active.config.fingerprint, ids, matrix, [s.status for s in store.sets("kb")]))
    assert states[0][0] == states[1][0] and states[0][1] == states[1][1]
    assert np.array_equal(states[0][2], states[1][2]) and states[0][2].shape[1] == 64
    assert states[0][3] == states[1][3] == ["retired", "active"]
    with SQLiteStore(paths[0]) as store:
        with pytest.raises(ModelMismatchError, match="hash-64"):
            search_dense(store, "kb", config_for(old, ["dense"]), np.zeros(384, dtype=np.float32), 3)
        assert store.gc("kb") == 1 and [s.status for s in store.sets("kb")] == ["active"]


def test_reembed_picks_up_documents_indexed_meanwhile(store: SQLiteStore) -> None:
    old, new = _encoder(), _encoder("hash-64", dim=64)
    index_documents(store, old, "kb", _docs(10))
    reembed(store, new, "kb", activate=False)
    index_documents(store, old, "kb", _docs(12, seed=1)[10:])  # the old model is still the active one
    report = reembed(store, new, "kb")
    assert report.embedded == 2 and store.vector_count(store.active_set("kb")) == 12


def test_concurrent_readers_search_while_a_writer_ingests(tmp_path: Path) -> None:
    path, encoder = tmp_path / "index.sqlite3", _encoder()
    with SQLiteStore(path) as store:
        index_documents(store, encoder, "kb", _docs(5))
    config, query = config_for(encoder, ["dense"]), encoder.encode(["debian kernel"])[0].dense
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        with SQLiteStore(path) as reader:
            while not done.is_set():
                try:
                    seen.append(len(search_dense(reader, "kb", config, query, 1000)))  # type: ignore[arg-type]
                except BaseException as exc:
                    errors.append(exc)
                    return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    with SQLiteStore(path) as writer:
        index_documents(writer, encoder, "kb", _docs(300, seed=2), batch_docs=10)
    done.set()
    for thread in readers:
        thread.join(timeout=30)
    assert not errors and len(seen) > 3 and min(seen) >= 5 and max(seen) <= 305


class _Pieces:
    """A tokenizer stub that cuts every word into 2-character subword pieces (like WordPiece's ##)."""

    pad_id = 0
    special_count = 2

    def encode(self, texts: list[str], max_length: int) -> list[object]:
        raise NotImplementedError

    def offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        import re

        return [[(m.start() + i, min(m.end(), m.start() + i + 2)) for m in re.finditer(r"\S+", text)
                 for i in range(0, m.end() - m.start(), 2)] for text in texts]


def test_chunks_do_not_split_words() -> None:
    text = " ".join(["abcdef", "ghij", "klmnopqr"] * 20)
    chunks = chunk_text(text, _Pieces(), chunk_tokens=12, overlap=3)  # type: ignore[arg-type]
    words = set(text.split())
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.tokens <= 12 and text[chunk.start : chunk.end] == chunk.text
        assert set(chunk.text.split()) <= words  # every piece of text is a whole word
    assert chunks[-1].end == len(text)


def test_sparse_vectors_are_stored_searched_and_deleted(store: SQLiteStore) -> None:
    from m3search.store.types import EmbeddingConfig
    from m3search.types import SparseVector

    def sparse(weights: dict[int, float]) -> SparseVector:
        keys = sorted(weights)
        return SparseVector(np.array(keys, dtype=np.int64), np.array([weights[t] for t in keys], dtype=np.float32))

    config = EmbeddingConfig("splade-test", "r", 100, None, ("sparse",), "fp32")
    target = store.create_collection("lex", config, 64, 8)
    vectors = {"a": {1: 0.5, 2: 1.0}, "b": {2: 0.2, 3: 2.0}, "c": {4: 1.0}}
    docs = [PreparedDocument(Document(d, d, "t"), chunk_text(d, _encoder().tokenizer, 64, 8),
                             [Embedding(1, False, sparse=sparse(w))]) for d, w in vectors.items()]
    store.write_documents(target, docs)
    hits = search_sparse(store, "lex", config, sparse({2: 1.0, 3: 0.5}), 5)
    assert [(h.doc_id, round(h.score, 4)) for h in hits] == [("b", 1.2), ("a", 1.0)]
    store.delete_documents("lex", ["b"])
    assert [h.doc_id for h in search_sparse(store, "lex", config, sparse({3: 1.0}), 5)] == []  # the vectors went too
