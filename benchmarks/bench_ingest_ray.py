"""Ingestion throughput: single process vs the Ray path (local Ray on 127.0.0.1, one actor), in one run.

Cranfield (1398 abstracts), MiniLM int8-dynamic on ONNX Runtime, 256-token chunks, into a fresh SQLite file each
time. Configurations: `single` (index_documents, 2 threads), `ray-1x2` (one actor with 2 threads: the distributed
path's overhead at equal compute), `ray-1x1` (one actor, 1 thread: the per-actor rate used in the projection).
The driver's time inside SQLite writes is measured to bound what more nodes can give while one driver writes.

Projection for N nodes of this kind with `a` actors each (a = cores - 1 actor of 1 thread):
    chunks/s(N) ~= min(N * a * r1, W)
with r1 the measured one-actor one-thread rate and W the driver's measured write capacity (chunks per second of
write time). Past W, writes must be parallel too (a Qdrant server written by the actors: the scale-out issue).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before anything imports ray

from common import ROOT, base_parser, machine, spawn, versions, write_results

CONFIGS = ("single", "ray-1x2", "ray-1x1")


def documents() -> list[Any]:
    from m3search.store.types import Document

    lines = (ROOT / "data" / "cranfield" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return [Document(r["_id"], r["text"], "cranfield", r.get("title", "")) for r in records]


def child(config: str, threads: int) -> dict[str, Any]:
    """One configuration in a fresh process: chunks/s and the seconds spent in store writes."""
    from m3search.ingest.distributed import RayOptions, index_documents_ray
    from m3search.ingest.pipeline import index_documents
    from m3search.models.encoders.loader import load_encoder
    from m3search.store.sqlite import SQLiteStore

    class TimedStore(SQLiteStore):
        write_seconds = 0.0

        def write_documents(self, target: Any, docs: Any) -> None:
            start = time.perf_counter()
            super().write_documents(target, docs)
            TimedStore.write_seconds += time.perf_counter() - start

    docs = documents()
    encoder = load_encoder("all-minilm-l6-v2", precision="int8-dynamic", backend="onnxruntime", threads=threads)
    encoder.encode(["warm up"])
    with tempfile.TemporaryDirectory() as scratch, TimedStore(Path(scratch) / "index.sqlite3") as store:
        start = time.perf_counter()
        if config == "single":
            report = index_documents(store, encoder, "cran", docs, chunk_tokens=256, overlap=32)
        else:
            actor_threads = int(config.split("x")[1])
            report = index_documents_ray(store, encoder, "cran", docs, chunk_tokens=256, overlap=32,
                                         options=RayOptions(None, actors=1, threads=actor_threads))
        seconds = time.perf_counter() - start
    return {"config": config, "documents": report.added, "chunks": report.chunks, "seconds": round(seconds, 2),
            "chunks_per_s": round(report.chunks / seconds, 1), "write_seconds": round(TimedStore.write_seconds, 2)}


def table(result: dict[str, Any]) -> str:
    rows = {r["config"]: r for r in result["runs"]}
    base = rows["single"]["chunks_per_s"]
    lines = ["# Ingestion: single process vs Ray (one actor)", "",
             f"Cranfield, {rows['single']['documents']} documents → {rows['single']['chunks']} chunks of ≤ 256 tokens, "
             f"MiniLM int8-dynamic (ONNX Runtime), SQLite; {result['machine']['cpu']}, {result['machine']['cores']} "
             f"cores. Ray times include starting and stopping a local Ray. Reproduce: `{result['command']}`.", "",
             "| configuration | chunks/s | vs single | seconds | driver write seconds |", "|" + " --- |" * 5]
    for name in CONFIGS:
        r = rows[name]
        lines.append(f"| {name} | {r['chunks_per_s']} | {r['chunks_per_s'] / base:.2f}x | {r['seconds']} | "
                     f"{r['write_seconds']} |")
    p = result["projection"]
    lines += ["", f"Projection: chunks/s(N) ≈ min(N * a * r1, W), r1 = {p['r1']} chunks/s (one actor, one thread, "
              f"start-up included), W = {p['W']} chunks/s (driver write capacity). With a = 1 actor per 2-core node: "
              + ", ".join(f"N={n}: {v}" for n, v in p["nodes"].items()) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = base_parser(__doc__, CONFIGS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    home = ROOT / ".cache" / "server-home"  # the prepared MiniLM of bench_server.py, if there
    os.environ["M3SEARCH_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return
    runs = [spawn(__file__, ["--child", config, "--threads", str(args.threads)]) for config in CONFIGS]
    rows = {r["config"]: r for r in runs}
    r1 = rows["ray-1x1"]["chunks_per_s"]
    single = rows["single"]
    write_capacity = round(single["chunks"] / max(single["write_seconds"], 1e-9), 1)
    result = {"machine": machine(), "versions": versions("m3search", "ray", "onnxruntime"),
              "command": "python benchmarks/bench_ingest_ray.py", "runs": runs,
              "projection": {"r1": r1, "W": write_capacity,
                             "nodes": {n: round(min(n * r1, write_capacity), 1) for n in (1, 2, 4, 8, 16)}}}
    write_results(args.out, "ingest_ray", result, table(result))


if __name__ == "__main__":
    main()
