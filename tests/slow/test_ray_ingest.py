"""Distributed ingestion on Ray: a simulated 2-node cluster and a local Ray give the same store as single-process
ingestion, and nothing Ray starts listens beyond loopback."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3search.ingest.distributed import LOOPBACK_ENV, RayOptions, index_documents_ray
from m3search.ingest.pipeline import index_documents
from m3search.models.encoders.loader import load_encoder
from m3search.settings import Settings
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document
from m3search.store.urls import open_store
from tests.references import import_or_skip
from tests.unit.test_cli import run

pytestmark = pytest.mark.slow


def _ray(monkeypatch: pytest.MonkeyPatch) -> Any:
    """ray, imported only after the loopback setting is in the environment (Ray reads it at import)."""
    for key, value in LOOPBACK_ENV.items():
        monkeypatch.setenv(key, value)
    return import_or_skip("ray", "the 'ray' extra is not installed")


def _listeners() -> set[str]:
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


@contextmanager
def watch_listeners() -> Iterator[set[str]]:
    """Every TCP listener that appears while the block runs (sampled every 0.1 s)."""
    before = _listeners()
    seen: set[str] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.update(_listeners() - before)
            stop.wait(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def _beyond_loopback(listeners: set[str]) -> set[str]:
    return {a for a in listeners if not a.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))}


def _documents() -> list[Document]:
    root = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "cranfield" / "corpus.jsonl"
    import json

    records = [json.loads(line) for line in root.read_text(encoding="utf-8").splitlines()[:70]]
    return [Document(r["_id"], r["text"], "cranfield", r.get("title", "")) for r in records]


def _contents(path: Path, collection: str) -> dict[str, tuple[list[str], np.ndarray]]:
    with SQLiteStore(path) as store:
        active = store.active_set(collection)
        ids, matrix = store.dense_matrix(active)
        rows = dict(zip(ids, matrix, strict=True))
        found: dict[str, tuple[list[str], np.ndarray]] = {}
        for doc_id in sorted(store.content_hashes(collection)):
            chunks = store._rows("SELECT k.id, k.text FROM chunks k JOIN documents d ON d.id = k.document_id "
                                 "WHERE d.doc_id = ? ORDER BY k.ordinal", (doc_id,))
            found[doc_id] = ([c[1] for c in chunks], np.stack([rows[c[0]] for c in chunks]))
        return found


def _assert_same(one: Path, other: Path, collection: str) -> None:
    a, b = _contents(one, collection), _contents(other, collection)
    assert a.keys() == b.keys() and len(a) == 70
    for doc_id in a:
        assert a[doc_id][0] == b[doc_id][0]
        np.testing.assert_allclose(a[doc_id][1], b[doc_id][1], atol=1e-4)


def test_two_node_cluster_ingest_equals_single_process(settings: Settings, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ray = _ray(monkeypatch)
    from ray.cluster_utils import Cluster

    encoder = load_encoder("all-minilm-l6-v2", precision="fp32", settings=settings)
    docs = _documents()
    with SQLiteStore(tmp_path / "single.db") as store:
        index_documents(store, encoder, "cran", docs, chunk_tokens=128, overlap=16)
    with watch_listeners() as appeared, tempfile.TemporaryDirectory(prefix="m3ray-", dir="/tmp") as short:
        # a fresh, short temp dir: Ray's socket paths must fit in 107 bytes, and no stale cluster file is joined
        monkeypatch.setenv("RAY_TMPDIR", short)
        Path(short, "ray").mkdir()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "temp_dir": str(Path(short, "ray")),
            "node_ip_address": "127.0.0.1"})
        try:
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes()
            with SQLiteStore(tmp_path / "ray.db") as store:
                report = index_documents_ray(store, encoder, "cran", docs, chunk_tokens=128, overlap=16,
                                             options=RayOptions(address=cluster.address, actors=1, threads=1))
        finally:
            ray.shutdown()
            cluster.shutdown()
    assert report.added == 70 and report.chunks > 70
    assert appeared and not _beyond_loopback(appeared), appeared  # Ray listened, on loopback only
    _assert_same(tmp_path / "single.db", tmp_path / "ray.db", "cran")


def test_cli_ray_starts_and_stops_a_local_ray_on_loopback(settings: Settings, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``index --ray`` into an embedded Qdrant store (the driver writes): same documents and chunks as SQLite."""
    _ray(monkeypatch)
    import_or_skip("qdrant_edge", "the 'qdrant' extra is not installed")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for doc in _documents()[:20]:
        (corpus / f"{doc.doc_id}.txt").write_text(doc.text, encoding="utf-8")
    common = ["--collection", "kb", "--model", "all-minilm-l6-v2", "--precision", "fp32", "--chunk-tokens", "128"]
    edge = f"qdrant+edge:///{tmp_path}/edge"
    assert run(["index", str(corpus), *common, "--db", str(tmp_path / "single.db")], capsys)[0] == 0
    with watch_listeners() as appeared:
        code, out, _ = run(["index", str(corpus), *common, "--store", edge, "--ray"], capsys)
    assert code == 0 and "20 added" in out
    assert appeared and not _beyond_loopback(appeared), appeared
    assert not (_listeners() & appeared)  # the local Ray was shut down
    with SQLiteStore(tmp_path / "single.db") as one, open_store(edge) as other:
        assert one.counts("kb") == other.counts("kb")
        assert one.content_hashes("kb") == other.content_hashes("kb")
    again = run(["index", str(corpus), *common, "--store", edge, "--ray"], capsys)
    assert again[0] == 0 and "20 unchanged" in again[1]  # nothing to embed: Ray is not even started
