"""Query latency per strategy: SQLite (m3search's in-memory indexes) vs Qdrant embedded (qdrant-edge), same data.

The 100k-chunk synthetic collection of ``bench_search.py`` (unit 384-d dense vectors with real-embedding-like
neighbourhoods, Zipf-distributed sparse weights, texts for bm25, 8 ColBERT rows per chunk) is built in SQLite, then
copied into an embedded Qdrant store with ``migrate_collection`` (the copy's time is the Qdrant ingest figure, its
optimizer run (HNSW build) separately). 1000 queries with precomputed embeddings; every query runs on both stores
back to back (interleaved, so drifts of this machine's speed hit both alike). Each call is the whole
``Searcher.search_embedded``: strategy, fusion, hits with texts and breakdowns. Dense recall@10 is against exact
search.

    .venv/bin/python benchmarks/bench_stores.py [--chunks 100000] [--queries 1000] [--keep DIR]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_search import DIM, Vectors, build_store, make_queries, numpy_exact, percentiles
from common import base_parser, machine, peak_rss_mb, versions, write_results

STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    ("dense", {}), ("sparse", {}), ("bm25", {}), ("hybrid", {}), ("hybrid", {"fusion": "dbsf"}), ("weighted", {}),
    ("colbert", {}), ("all", {}), ("hybrid", {"filters": {"shard": 1}}),
]


def label(strategy: str, extra: dict[str, Any]) -> str:
    if "fusion" in extra:
        return f"{strategy} (dbsf)"
    return f"{strategy}, filter on 1/4" if "filters" in extra else strategy


def build(scratch: Path, n: int, vectors: Vectors) -> dict[str, Any]:
    from m3search.store.migrate import migrate_collection
    from m3search.store.urls import open_store

    sqlite_path = scratch / "index.sqlite3"
    figures: dict[str, Any] = {"sqlite_write_s": round(build_store(sqlite_path, n, vectors), 1)}
    with open_store(sqlite_path) as source, open_store(f"qdrant+edge:///{scratch}/edge") as target:
        start = time.perf_counter()
        migrate_collection(source, target, "synthetic", batch_docs=2000)
        figures["edge_write_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        target.close()  # runs the optimizers left (HNSW build)
        figures["edge_close_optimize_s"] = round(time.perf_counter() - start, 1)
    blocks = sum(f.stat().st_blocks for f in (scratch / "edge").rglob("*") if f.is_file())
    figures["edge_disk_mb"] = round(blocks * 512 / 1e6)  # allocated blocks: the engine preallocates sparse files
    figures["sqlite_disk_mb"] = round(sqlite_path.stat().st_size / 1e6)
    return figures


def run(n: int, n_queries: int, keep: Path | None) -> dict[str, Any]:
    from dataclasses import replace

    from m3search.models.registry import get_spec
    from m3search.retrieval.search import Searcher
    from m3search.retrieval.types import SearchRequest
    from m3search.store.urls import open_store

    vectors = Vectors(np.random.default_rng(1), 1000)
    scratch = keep or Path(tempfile.mkdtemp(prefix="m3-stores-"))
    try:
        reuse = keep is not None and (keep / "build.json").exists()
        figures = json.loads((keep / "build.json").read_text()) if reuse and keep else build(scratch, n, vectors)
        if keep is not None:
            (keep / "build.json").write_text(json.dumps(figures))
        result: dict[str, Any] = {"chunks": n, "queries": n_queries, "build": figures}
        dense_q, qs = make_queries(vectors, n_queries, np.random.default_rng(7))
        spec = replace(get_spec("mxbai-embed-large-v1"), name="synthetic-mrl", dim=DIM, mrl_dims=(DIM, 192, 96))
        with open_store(scratch / "index.sqlite3") as lite, open_store(f"qdrant+edge:///{scratch}/edge") as edge:
            ids, matrix = lite.dense_matrix(lite.active_set("synthetic"))
            _, truth = numpy_exact(matrix, dense_q)
            truth_ids = [set(np.asarray(ids)[list(t)].tolist()) for t in truth]
            searchers = {"sqlite": Searcher(lite, spec=spec, ann_dir=scratch / "ann"),
                         "qdrant-edge": Searcher(edge, spec=spec)}
            result["strategies"] = {}
            for strategy, extra in STRATEGIES:
                request = SearchRequest(strategy, k=10, group_by="chunk", **extra)  # type: ignore[arg-type]
                row: dict[str, Any] = {}
                for name, searcher in searchers.items():
                    start = time.perf_counter()
                    searcher.search_embedded("synthetic", *qs[0], request)  # in-memory indexes load here
                    row[name] = {"first_call_s": round(time.perf_counter() - start, 2)}
                samples: dict[str, list[float]] = {name: [] for name in searchers}
                recall: dict[str, list[float]] = {name: [] for name in searchers}
                for (text, emb), want in zip(qs, truth_ids, strict=True):
                    for name, searcher in searchers.items():
                        start = time.perf_counter()
                        hits = searcher.search_embedded("synthetic", text, emb, request).hits
                        samples[name].append(time.perf_counter() - start)
                        if strategy == "dense":
                            recall[name].append(len({h.chunk_id for h in hits} & want) / 10)
                for name in searchers:
                    row[name].update(percentiles(samples[name]))
                    if recall[name]:
                        row[name]["recall@10_vs_exact"] = round(float(np.mean(recall[name])), 4)
                row["edge_vs_sqlite_p50"] = round(row["qdrant-edge"]["p50_ms"] / row["sqlite"]["p50_ms"], 2)
                result["strategies"][label(strategy, extra)] = row
                print(label(strategy, extra), row, flush=True)
        result["peak_rss_mb"] = round(peak_rss_mb())
        return result
    finally:
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


def table(result: dict[str, Any]) -> str:
    b = result["build"]
    lines = [f"# Query latency per strategy: SQLite vs Qdrant embedded ({result['chunks']:,} chunks, "
             f"{result['queries']} queries, k = 10)", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. Same vectors in both stores "
             "(384-d dense, Zipf sparse, 8 ColBERT rows per chunk); each query runs on both, back to back. Times are "
             "whole `Searcher.search_embedded` calls (hits with texts and breakdowns).", "",
             "| strategy | SQLite p50 ms | SQLite p99 ms | qdrant-edge p50 ms | qdrant-edge p99 ms "
             "| edge / SQLite p50 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, row in result["strategies"].items():
        lite, edge = row["sqlite"], row["qdrant-edge"]
        lines.append(f"| {name} | {lite['p50_ms']} | {lite['p99_ms']} | {edge['p50_ms']} | {edge['p99_ms']} | "
                     f"{row['edge_vs_sqlite_p50']} |")
    dense = result["strategies"]["dense"]
    lines += ["", f"Dense recall@10 vs exact: SQLite (usearch HNSW) {dense['sqlite'].get('recall@10_vs_exact')}, "
              f"qdrant-edge (Qdrant HNSW) {dense['qdrant-edge'].get('recall@10_vs_exact')}.", "",
              f"Build: SQLite writes {b['sqlite_write_s']} s ({b['sqlite_disk_mb']} MB); copy into qdrant-edge "
              f"{b['edge_write_s']} s, its final optimizer run {b['edge_close_optimize_s']} s "
              f"({b['edge_disk_mb']} MB). "
              f"Peak RSS {result['peak_rss_mb']} MB.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = base_parser(__doc__, ())
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="build the stores here once and reuse them in later runs")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(), "versions": versions("qdrant-edge-py", "usearch", "numpy"),
              **run(args.chunks, args.queries, args.keep)}
    write_results(args.out, "stores", result, table(result))


if __name__ == "__main__":
    main()
