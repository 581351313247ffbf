"""Length-aware batch splitting (``models/batching.py``): padding, speed and INT8 fidelity, for each rule in one run.

A server merges concurrent requests into one ``encode`` call of ~130 short texts of mixed lengths; bulk encoding
sorts 1500 at once. ``plan_batches`` closes a batch where lengths fall below ``MIN_FILL`` (0.8) of its width once
it holds ``MIN_SPLIT`` inputs. Compared here: no split, split after 4, split after 16 (the shipped rule):
- padding: real tokens / padded tokens of the planned batches (MiniLM tokenizer, Cranfield sentences of 5-60 words);
- speed: MiniLM int8-dynamic on ONNX Runtime, 2 threads, texts/s, median of 3 rounds, rules interleaved;
- fidelity: SPLADE-tiny int8-dynamic sparse mean cosine to fp32 on the bundled held-out sample (the gate is 0.99:
  dynamic INT8 scales activations per batch, so the batch plan moves this figure).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import sentences
from common import ROOT, base_parser, machine, versions, write_results

RULES = {"no split": 10**9, "split after 4": 4, "split after 16 (shipped)": 16}
MERGE = 134  # texts per merged inference call at 32 clients (benchmarks/results/server.md)


def padding(lengths: list[int], chunk: int, batching: Any) -> float:
    real = padded = 0
    for start in range(0, len(lengths), chunk):
        part = lengths[start : start + chunk]
        for batch in batching.plan_batches(part, 8192, 64):
            padded += max(part[i] for i in batch) * len(batch)
            real += sum(part[i] for i in batch)
    return real / padded


def speed(encoder: Any, texts: list[str], chunk: int) -> float:
    start = time.perf_counter()
    for offset in range(0, len(texts), chunk):
        encoder.encode(texts[offset : offset + chunk])
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = base_parser(__doc__, ())
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("M3SEARCH_HOME", str(ROOT / ".cache" / "server-home"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["M3SEARCH_FORCE_PRECISION"] = "1"  # measure fidelity below the gate instead of refusing
    from m3search import load_encoder
    from m3search.models.prepare.calibration import bundled
    from m3search.models.runtime import batching, fidelity

    pool = sentences()
    rng = np.random.default_rng(1)
    texts = [pool[i] for i in rng.integers(0, len(pool), size=args.texts)]
    minilm = load_encoder("all-minilm-l6-v2", precision="int8-dynamic", backend="onnxruntime", threads=args.threads)
    lengths = [len(t.ids) for t in minilm.tokenize(texts)]
    minilm.encode(texts[:64])
    splade32 = load_encoder("splade-tiny", precision="fp32", backend="onnxruntime", threads=args.threads)
    splade8 = load_encoder("splade-tiny", precision="int8-dynamic", backend="onnxruntime", threads=args.threads)
    held_out = bundled("fidelity")
    rows: dict[str, dict[str, Any]] = {}
    for name, split in RULES.items():
        batching.MIN_SPLIT = split  # plan_batches reads it at call time
        figures = fidelity.measure(splade32.encode(held_out, outputs=["sparse"]),
                                   splade8.encode(held_out, outputs=["sparse"]))
        rows[name] = {"min_split": split, "padding_bulk": round(padding(lengths, len(lengths), batching), 3),
                      "padding_merged": round(padding(lengths, MERGE, batching), 3), "bulk": [], "merged": [],
                      "splade_int8_sparse_cos": round(figures["sparse_cos_mean"], 4)}
    for _ in range(args.rounds):  # interleaved: this machine's speed drifts between minutes
        for name, split in RULES.items():
            batching.MIN_SPLIT = split
            rows[name]["bulk"].append(round(speed(minilm, texts, len(texts)), 1))
            rows[name]["merged"].append(round(speed(minilm, texts, MERGE), 1))
    for row in rows.values():
        row["bulk_texts_per_s"] = float(np.median(row["bulk"]))
        row["merged_texts_per_s"] = float(np.median(row["merged"]))
    result = {"machine": machine(), "versions": versions("m3search", "onnxruntime"), "texts": len(texts),
              "merge": MERGE, "min_fill": batching.MIN_FILL, "command": "python benchmarks/bench_batching.py",
              "rules": rows}
    write_results(args.out, "batching", result, table(result))


def table(result: dict[str, Any]) -> str:
    lines = ["# Batch splitting: padding, speed, INT8 fidelity", "",
             f"{result['texts']} Cranfield sentences (5-60 words); merged = calls of {result['merge']} texts (a "
             f"server's merge at 32 clients), bulk = one call. MiniLM int8-dynamic, ONNX Runtime, 2 threads, median of "
             f"rounds interleaved across rules; {result['machine']['cpu']}. Reproduce: `{result['command']}`.", "",
             "| rule | real/padded tokens, bulk | real/padded, merged | texts/s bulk | texts/s merged | "
             "SPLADE-tiny int8 sparse cos (gate 0.99) |", "|" + " --- |" * 6]
    for name, r in result["rules"].items():
        lines.append(f"| {name} | {r['padding_bulk']} | {r['padding_merged']} | {r['bulk_texts_per_s']} | "
                     f"{r['merged_texts_per_s']} | {r['splade_int8_sparse_cos']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
