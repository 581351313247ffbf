"""BGE-M3 encode benchmark: m3search INT8 / fp32 ONNX vs FlagEmbedding BGEM3FlagModel (torch fp32).

Full-size BGE-M3 architecture with random weights (568M parameters; speed does not depend on the weight values),
all three outputs (dense + sparse + ColBERT), 2 threads, the same inputs for every engine:
- ``passages``: 256 passages of mixed length up to 512 tokens (max length 512, batches of up to 16 x 512 tokens);
- ``long``: 8 documents of 8192 tokens (max length 8192, one document per batch).
Each engine runs in its own process so that its peak RSS is its own. Results: benchmarks/results/bge_m3.{json,md}.

    .venv/bin/python benchmarks/bench_bge_m3.py            # everything (about 40 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_bge_m3.py --long 2   # fewer long documents
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from importlib import resources
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

SMOKE = os.environ.get("M3SEARCH_BENCH_SMOKE") == "1"  # a tiny model, to check the script itself quickly
CACHE = ROOT / ".cache" / ("bge-m3-smoke" if SMOKE else "bge-m3")
NON_EMBEDDING_PARAMS = 303e6  # 24 layers x (4 x 1024^2 + 2 x 1024 x 4096) ~ 302M, plus heads
ENGINES = ("m3search-int8", "m3search-fp32", "flagembedding-fp32")


def corpus_words() -> list[str]:
    text = resources.files("m3search.data").joinpath("debian_faq_en.jsonl").read_text(encoding="utf-8")
    return re.findall(r"\S+", " ".join(json.loads(line)["text"] for line in text.splitlines() if line.strip()))


def make_inputs(case: str, count: int) -> list[str]:
    """Deterministic texts: passages of 10-380 words (up to ~512 tokens) or ~7000-word documents."""
    words, rng = corpus_words(), random.Random(13)
    texts = []
    for _ in range(count):
        n = rng.randint(10, 380) if case == "passages" else 7000
        start = rng.randint(0, max(0, len(words) - n))
        chunk = (words * (1 + n // len(words)))[start : start + n]
        texts.append(" ".join(chunk))
    return texts


def model_dir() -> Path:
    directory = CACHE / "model"
    if not (directory / "model.safetensors").is_file():
        from m3search.testing import FULL_SIZE, M3Shape, build_random_bge_m3

        build_random_bge_m3(directory, M3Shape() if SMOKE else FULL_SIZE)
    return directory


def run_m3search(precision: str, texts: list[str], max_length: int, threads: int) -> dict[str, Any]:
    from m3search import load_encoder
    from m3search.settings import Settings

    encoder = load_encoder("bge-m3", path=model_dir(), precision=precision,  # type: ignore[arg-type]
                           threads=threads, settings=Settings(home=CACHE / "home"))
    outputs: Any = ["dense", "sparse", "colbert"]
    encoder.encode(texts[:2], outputs=outputs, max_length=64)  # warm-up: session built, kernels loaded
    start = time.perf_counter()
    results = encoder.encode(texts, outputs=outputs, max_length=max_length)
    seconds = time.perf_counter() - start
    manifest = encoder.prepared.manifest  # type: ignore[attr-defined]
    return {
        "seconds": seconds,
        "tokens": sum(r.tokens for r in results),
        "dense": np.stack([r.dense for r in results]),
        "file_bytes": manifest["variants"][precision]["bytes"],
    }


def run_flagembedding(texts: list[str], max_length: int, threads: int, batch: int) -> dict[str, Any]:
    import torch
    from FlagEmbedding import BGEM3FlagModel

    torch.set_num_threads(threads)
    model = BGEM3FlagModel(str(model_dir()), use_fp16=False, devices="cpu")
    model.encode(texts[:2], batch_size=2, max_length=64, return_sparse=True, return_colbert_vecs=True)
    start = time.perf_counter()
    out = model.encode(texts, batch_size=batch, max_length=max_length, return_dense=True, return_sparse=True,
                       return_colbert_vecs=True)
    seconds = time.perf_counter() - start
    tokens = sum(len(v) + 1 for v in out["colbert_vecs"])  # ColBERT keeps every token but CLS
    size = sum(p.stat().st_size for p in model_dir().glob("*") if p.suffix in (".safetensors", ".pt"))
    return {"seconds": seconds, "tokens": tokens, "dense": np.asarray(out["dense_vecs"]), "file_bytes": size}


def child(engine: str, case: str, count: int, threads: int) -> None:
    """Run one engine on one case and print a JSON line (vectors saved beside, for fidelity)."""
    texts = make_inputs(case, count)
    max_length = 512 if case == "passages" else 8192
    if engine == "flagembedding-fp32":
        result = run_flagembedding(texts, max_length, threads, batch=16 if case == "passages" else 1)
    else:
        result = run_m3search(engine.rsplit("-", 1)[1], texts, max_length, threads)
    np.save(CACHE / f"{engine}-{case}.npy", result.pop("dense"))
    print(json.dumps({**result, "texts": len(texts), "peak_rss_mb": peak_rss_mb()}))


def gemm_peak(threads: int) -> float:
    """Measured fp32 GEMM rate (GFLOP/s) of torch on this machine: the bar for 'achieved GFLOP/s'."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    start = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 4096**3 / (time.perf_counter() - start) / 1e9


def prepare() -> None:
    """Build the random full-size model and its ONNX files once (peak RSS reported separately)."""
    from m3search.models.prepare import prepare_model
    from m3search.models.registry import get_spec
    from m3search.models.resolve import find_local
    from m3search.settings import Settings

    settings = Settings(home=CACHE / "home")
    start = time.perf_counter()
    resolved = find_local(get_spec("bge-m3"), settings, model_dir())
    assert resolved is not None
    prepared = prepare_model(resolved, settings.home)
    sizes = {k: v["bytes"] for k, v in prepared.manifest["variants"].items()}
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb(), "bytes": sizes}))


def summarise(runs: dict[str, dict[str, Any]], peak: float) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key, run in runs.items():
        engine, case = key.split("/")
        reference = runs.get(f"flagembedding-fp32/{case}")
        tokens_per_s = run["tokens"] / run["seconds"]
        row = {
            "texts_per_s": run["texts"] / run["seconds"],
            "tokens_per_s": tokens_per_s,
            "peak_rss_mb": run["peak_rss_mb"],
            "file_mb": run["file_bytes"] / 1e6,
            "gflops": 2 * NON_EMBEDDING_PARAMS * tokens_per_s / 1e9,
            "fraction_of_fp32_peak": 2 * NON_EMBEDDING_PARAMS * tokens_per_s / 1e9 / peak,
            **{k: run[k] for k in ("texts", "tokens", "seconds")},
        }
        if reference is not None:
            row["vs_flagembedding"] = row["texts_per_s"] / (reference["texts"] / reference["seconds"])
            ours = np.load(CACHE / f"{engine}-{case}.npy")
            theirs = np.load(CACHE / f"flagembedding-fp32-{case}.npy")
            cosines = (ours * theirs).sum(axis=1)
            row["dense_cos_mean"], row["dense_cos_min"] = float(cosines.mean()), float(cosines.min())
        summary[key] = row
    return summary


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# BGE-M3 encode benchmark (full-size architecture, random weights, dense + sparse + ColBERT)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['threads']} threads; torch fp32 GEMM peak "
        f"{result['fp32_gemm_peak_gflops']:.0f} GFLOP/s. Reproduce: `{result['command']}`.",
        "",
        "| case | engine | texts/s | tokens/s | vs FlagEmbedding | peak RSS (MB) | model file (MB) | GFLOP/s "
        "(% of fp32 peak) | dense cos vs FlagEmbedding |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in result["results"].items():
        engine, case = key.split("/")
        cos = f"{row['dense_cos_mean']:.4f} / {row['dense_cos_min']:.4f}" if "dense_cos_mean" in row else "-"
        lines.append(
            f"| {case} | {engine} | {row['texts_per_s']:.2f} | {row['tokens_per_s']:.0f} | "
            f"{row.get('vs_flagembedding', float('nan')):.2f}x | {row['peak_rss_mb']:.0f} | {row['file_mb']:.0f} | "
            f"{row['gflops']:.0f} ({100 * row['fraction_of_fp32_peak']:.0f} %) | {cos} |"
        )
    lines += ["", "Preparation (export + fusion + INT8, once): "
              f"{result['prepare']['seconds']:.0f} s, peak RSS {result['prepare']['peak_rss_mb']:.0f} MB.", ""]
    lines += [f"- {target}: {'met' if ok else 'NOT met'}" for target, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def targets(summary: dict[str, Any]) -> dict[str, bool]:
    def get(key: str, field: str) -> float:
        return float(summary.get(key, {}).get(field, float("nan")))

    return {
        "INT8 >= 2.5x FlagEmbedding texts/s (passages)": get("m3search-int8/passages", "vs_flagembedding") >= 2.5,
        "fp32 >= 1.3x FlagEmbedding texts/s (passages)": get("m3search-fp32/passages", "vs_flagembedding") >= 1.3,
        "INT8 model file <= 650 MB": get("m3search-int8/passages", "file_mb") <= 650,
        "INT8 peak RSS on 8 x 8192 tokens <= 3 GB": get("m3search-int8/long", "peak_rss_mb") <= 3072,
    }


def main() -> None:
    parser = base_parser(__doc__, ENGINES)
    parser.add_argument("--passages", type=int, default=256, help="passages of up to 512 tokens")
    parser.add_argument("--long", type=int, default=8, help="documents of 8192 tokens (0 skips the case)")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        return prepare()
    if args.child:
        count = args.passages if args.child[1] == "passages" else args.long
        return child(args.child[0], args.child[1], count, args.threads)
    common = ["--passages", str(args.passages), "--long", str(args.long), "--threads", str(args.threads)]
    prep = spawn(__file__, ["--prepare", *common])
    runs = {}
    for case in ("passages", "long") if args.long else ("passages",):
        for engine in args.engines.split(","):
            print(f"running {engine} on {case} ...", flush=True)
            runs[f"{engine}/{case}"] = spawn(__file__, ["--child", engine, case, *common])
    peak = gemm_peak(args.threads)
    summary = summarise(runs, peak)
    result = {
        "command": "python benchmarks/bench_bge_m3.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "versions": versions("m3search", "onnxruntime", "torch", "FlagEmbedding", "transformers"),
        "threads": args.threads, "fp32_gemm_peak_gflops": peak, "prepare": prep, "results": summary,
        "targets": targets(summary),
    }
    write_results(args.out, "bge_m3", result, markdown(result))


if __name__ == "__main__":
    main()
