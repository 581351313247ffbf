"""Store benchmark: end-to-end indexing (chunk + embed + SQLite writes) vs the pure encoder on the same texts.

Cases: the Cranfield abstracts (1398 documents) and a synthetic corpus of about 100k chunks (documents of
Cranfield words, chunked at 48 tokens). all-MiniLM-L6-v2, ONNX Runtime int8-dynamic, 2 threads. For each case:
1. index into a fresh database (timed, with the time spent inside the store measured separately);
2. encode the very same chunk texts with the same encoder, in the same batches (the peer: no store at all);
3. index the unchanged corpus again (every document skipped by content hash);
and report storage overhead = (index time - encode time) / encode time, bytes per chunk, and the re-index speed-up.

    .venv/bin/python benchmarks/bench_store.py [--synthetic-chunks 100000]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (  # the script's folder is on sys.path
    ROOT,
    base_parser,
    cranfield_texts,
    machine,
    peak_rss_mb,
    versions,
    write_results,
)

CACHE = ROOT / ".cache" / "minilm"  # shares the prepared MiniLM with bench_minilm.py


def cranfield() -> list[Any]:
    from m3search.store.types import Document

    return [Document(f"cran{i}", text, "cranfield") for i, text in enumerate(cranfield_texts())]


def synthetic(chunks: int) -> list[Any]:
    from m3search.store.types import Document

    words = " ".join(cranfield_texts()).split()
    rng = random.Random(100)
    docs, per_doc = [], 8  # about 300 words make about 8 chunks of 48 tokens
    for i in range(chunks // per_doc):
        start = rng.randint(0, len(words) - 300)
        docs.append(Document(f"syn{i}", " ".join(words[start : start + 300]), "synthetic"))
    return docs


class TimedStore:
    """Wraps a store and adds up the seconds spent in its write calls."""

    def __init__(self, store: Any) -> None:
        self.store, self.seconds = store, 0.0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if name not in ("write_documents", "content_hashes", "check_model", "create_collection"):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def run_case(name: str, docs: list[Any], chunk_tokens: int, threads: int) -> dict[str, Any]:
    from m3search import load_encoder
    from m3search.ingest.pipeline import index_documents
    from m3search.settings import Settings
    from m3search.store.sqlite import SQLiteStore

    encoder = load_encoder("all-minilm-l6-v2", backend="onnxruntime", precision="int8-dynamic", threads=threads,
                           settings=Settings(home=CACHE / "home"))
    encoder.encode(["warm-up"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.sqlite3"
        with SQLiteStore(path) as store:
            timed = TimedStore(store)
            start = time.perf_counter()
            report = index_documents(timed, encoder, name, docs, chunk_tokens=chunk_tokens,  # type: ignore[arg-type]
                                     overlap=8)
            index_seconds = time.perf_counter() - start
            rows = store._rows("SELECT d.id, k.text FROM chunks k JOIN documents d ON d.id = k.document_id "
                               "ORDER BY d.id, k.ordinal")
            by_doc: dict[int, list[str]] = {}
            for doc_id, text in rows:
                by_doc.setdefault(doc_id, []).append(text)
            texts = list(by_doc.values())  # documents in insertion order, as the indexer wrote them
            batches = [[t for doc in texts[i : i + 32] for t in doc] for i in range(0, len(texts), 32)]
            start = time.perf_counter()
            for batch in batches:  # the same per-batch encode calls as the indexer, nothing else
                encoder.encode_documents(batch, max_length=chunk_tokens)
            encode_seconds = time.perf_counter() - start
            start = time.perf_counter()
            again = index_documents(store, encoder, name, docs)
            reindex_seconds = time.perf_counter() - start
        size = path.stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("index.sqlite3-*"))
    return {
        "documents": len(docs), "chunks": report.chunks, "index_seconds": index_seconds,
        "store_write_seconds": timed.seconds, "encode_seconds": encode_seconds,
        "chunks_per_s_end_to_end": report.chunks / index_seconds,
        "chunks_per_s_encoder": report.chunks / encode_seconds,
        "storage_overhead": (index_seconds - encode_seconds) / encode_seconds,
        "store_share_of_index": timed.seconds / index_seconds,
        "bytes_per_chunk": size / report.chunks, "reindex_seconds": reindex_seconds,
        "reindex_speedup": index_seconds / reindex_seconds, "reindex_unchanged": again.unchanged,
        "peak_rss_mb": peak_rss_mb(),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Store benchmark: indexing end to end vs the pure encoder",
        "",
        f"all-MiniLM-L6-v2 ONNX Runtime int8-dynamic, {result['threads']} threads; {result['machine']['cpu']}. "
        f"Reproduce: `{result['command']}`.",
        "",
        "| case | documents | chunks | end-to-end chunks/s | encoder chunks/s | storage overhead | time in store "
        "writes | bytes/chunk | re-index unchanged |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for case, r in result["results"].items():
        lines.append(f"| {case} | {r['documents']} | {r['chunks']} | {r['chunks_per_s_end_to_end']:.0f} | "
                     f"{r['chunks_per_s_encoder']:.0f} | {100 * r['storage_overhead']:.1f} % | "
                     f"{100 * r['store_share_of_index']:.1f} % | {r['bytes_per_chunk']:.0f} | "
                     f"{r['reindex_seconds']:.2f} s ({r['reindex_speedup']:.0f}x faster) |")
    lines += ["", *[f"- {t}: {'met' if ok else 'NOT met'}" for t, ok in result["targets"].items()]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = base_parser(__doc__, ("m3search",))
    parser.add_argument("--synthetic-chunks", type=int, default=100_000, help="chunks of the synthetic case")
    args = parser.parse_args()
    results = {
        "cranfield": run_case("cranfield", cranfield(), 256, args.threads),
        "synthetic": run_case("synthetic", synthetic(args.synthetic_chunks), 48, args.threads),
    }
    targets = {}
    for case, r in results.items():
        targets[f"{case}: storage overhead <= 10 % of encode time"] = r["storage_overhead"] <= 0.10
        targets[f"{case}: re-index of an unchanged corpus >= 50x faster"] = r["reindex_speedup"] >= 50
    result = {"command": "python benchmarks/bench_store.py " + " ".join(sys.argv[1:]), "threads": args.threads,
              "machine": machine(), "versions": versions("m3search", "onnxruntime"), "results": results,
              "targets": targets}
    write_results(args.out, "store", result, markdown(result))


if __name__ == "__main__":
    main()
