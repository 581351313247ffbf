"""kill -9 of a real ``m3search index`` at random moments: the database stays sound and a re-run completes it."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TRIALS = 10
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


def _state(db: Path) -> tuple[str, int, int, int, int]:
    con = sqlite3.connect(db)
    integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
    documents = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    chunks = con.execute("SELECT count(*) FROM chunks").fetchone()[0]
    vectors = con.execute("SELECT count(*) FROM dense_vectors").fetchone()[0]
    empty = con.execute("SELECT count(*) FROM documents d WHERE NOT EXISTS "
                        "(SELECT 1 FROM chunks k WHERE k.document_id = d.id)").fetchone()[0]
    con.close()
    return integrity, documents, chunks, vectors, empty


def test_kill_9_never_leaves_half_written_documents(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.jsonl")
    clean = tmp_path / "clean.sqlite3"
    start = time.monotonic()
    assert _index(corpus, clean).wait(timeout=600) == 0
    full_run = time.monotonic() - start
    expected = _state(clean)
    assert expected[0] == "ok" and expected[1] == 3000 and expected[2] == expected[3]
    db, rng = tmp_path / "crash.sqlite3", random.Random(9)
    kills = 0
    for _ in range(TRIALS):
        process = _index(corpus, db)
        time.sleep(rng.uniform(0.2, full_run))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
        integrity, documents, chunks, vectors, empty = _state(db)
        assert integrity == "ok" and chunks == vectors and empty == 0  # whole documents only
        assert documents <= 3000
    assert kills >= TRIALS // 2  # most trials really were interrupted mid-run
    final = _index(corpus, db)
    out = json.loads(final.communicate(timeout=600)[0])
    assert final.returncode == 0 and out["added"] + out["unchanged"] == 3000 and out["updated"] == 0
    assert _state(db) == expected  # the same documents, chunks and vectors as one clean run: no duplicates
