"""BGE-M3 encode benchmark: m3search's backends and precision modes vs FlagEmbedding BGEM3FlagModel (torch fp32)
and the same model in a torch bf16 autocast forward.

Engines: ``m3search-BACKEND-PRECISION`` (``ort`` = ONNX Runtime, ``ov`` = OpenVINO), ``flagembedding-fp32``,
``torch-bf16`` (passages only: without native bf16 it is too slow for 8k-token documents).
int8-static is calibrated on 48 of the bundled calibration texts (M3SEARCH_CALIBRATION_SIZE; 300 by default).
Each mode is prepared in its own process first (preparing BGE-M3 needs up to ~20 GB; one process for all ran out of
memory on a 24 GB machine).

Full-size BGE-M3 architecture with random weights (568M parameters; speed does not depend on the weight values),
all three outputs (dense + sparse + ColBERT), 2 threads, the same inputs for every engine:
- ``passages``: 256 passages of mixed length up to 512 tokens (max length 512, the default token budget per call);
- ``long``: 8 documents of 8192 tokens (max length 8192, one document per batch).
Each engine runs in its own process so that its peak RSS is its own. Results: benchmarks/results/bge_m3.{json,md}.

    .venv/bin/python benchmarks/bench_bge_m3.py --passages 32 --long 1   # about 30 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
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
    engine_mode,
    machine,
    matmul_peak,
    peak_rss_mb,
    prepare_modes,
    spawn,
    versions,
    write_results,
)

SMOKE = os.environ.get("M3SEARCH_BENCH_SMOKE") == "1"  # a tiny model, to check the script itself quickly
CACHE = ROOT / ".cache" / ("bge-m3-smoke" if SMOKE else "bge-m3")
# BGE-M3's width with this many layers instead of 24: its torch export fits in memory, so `@torch` engines can run
LAYERS = int(os.environ.get("M3SEARCH_BENCH_LAYERS", "0")) or None
NAME = f"bge_m3-{LAYERS}-layers" if LAYERS else "bge_m3"
NON_EMBEDDING_PARAMS = 303e6  # 24 layers x (4 x 1024^2 + 2 x 1024 x 4096) ~ 302M, plus heads
ENGINES = ("m3search-ov-int8-static", "m3search-ort-int8-dynamic", "m3search-ov-int8-dynamic", "flagembedding-fp32",
           "torch-bf16")
PEER = "flagembedding-fp32"
CALIBRATION_SIZE = 48


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


def model_dir(layers: int | None = None) -> Path:
    """The random BGE-M3 (full size; with ``layers``, BGE-M3's width with fewer layers: a shallower copy whose
    torch export fits in memory, for same-run comparisons with the torch path)."""
    from m3search.testing import FULL_SIZE, M3Shape, build_random_bge_m3

    layers = layers or LAYERS
    directory = CACHE / ("model" if layers is None else f"model-{layers}-layers")
    if not (directory / "model.safetensors").is_file():
        shape = M3Shape() if SMOKE else FULL_SIZE
        build_random_bge_m3(directory, shape if layers is None else dataclasses.replace(shape, layers=layers))
    return directory


def encoder_for(engine: str, threads: int, layers: int | None = None) -> Any:
    from m3search import load_encoder
    from m3search.settings import Settings

    backend, precision, builder = engine_mode(engine)
    settings = Settings(home=CACHE / "home", calibration_size=CALIBRATION_SIZE, builder=builder)
    return load_encoder("bge-m3", path=model_dir(layers), precision=precision, backend=backend,  # type: ignore[arg-type]
                        threads=threads, settings=settings)


def run_m3search(engine: str, texts: list[str], max_length: int, threads: int) -> dict[str, Any]:
    encoder = encoder_for(engine, threads)
    outputs: Any = ["dense", "sparse", "colbert"]
    encoder.encode(texts[:2], outputs=outputs, max_length=64)  # warm-up: session built, kernels loaded
    start = time.perf_counter()
    results = encoder.encode(texts, outputs=outputs, max_length=max_length)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "tokens": sum(r.tokens for r in results),
        "dense": np.stack([r.dense for r in results]),
        "file_bytes": encoder.prepared.variant(encoder.backend, encoder.precision)["bytes"],
    }


def run_torch_bf16(texts: list[str], max_length: int, threads: int, batch: int) -> dict[str, Any]:
    """The same network as a plain torch forward in bf16 (weights and activations), all three heads."""
    import torch
    from transformers import AutoTokenizer, XLMRobertaModel

    torch.set_num_threads(threads)
    directory = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = XLMRobertaModel.from_pretrained(str(directory), torch_dtype=torch.bfloat16).eval()
    heads = []
    for name in ("colbert_linear", "sparse_linear"):
        state = torch.load(directory / f"{name}.pt", map_location="cpu", weights_only=True)
        layer = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0]).to(torch.bfloat16)
        layer.load_state_dict(state)
        heads.append(layer)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    dense = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    tokens = 0
    with torch.inference_mode():
        start = time.perf_counter()
        for offset in range(0, len(texts), batch):
            rows = order[offset : offset + batch]
            inputs = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt")
            hidden = model(**inputs).last_hidden_state
            heads[0](hidden[:, 1:])  # ColBERT vectors
            torch.relu(heads[1](hidden))  # lexical weights
            cls = torch.nn.functional.normalize(hidden[:, 0].float(), dim=-1)
            dense[rows] = cls.numpy()
            tokens += int(inputs["attention_mask"].sum())
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "tokens": tokens, "dense": dense, "file_bytes": 2 * 568e6}


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
    batch = 16 if case == "passages" else 1
    if engine.startswith("m3search"):
        result = run_m3search(engine, texts, max_length, threads)
    elif engine == "torch-bf16":
        result = run_torch_bf16(texts, max_length, threads, batch)
    else:
        result = run_flagembedding(texts, max_length, threads, batch)
    np.save(CACHE / f"{NAME}-{engine}-{case}.npy", result.pop("dense"))
    print(json.dumps({**result, "texts": len(texts), "peak_rss_mb": peak_rss_mb()}))


def prepare(engines: list[str], threads: int) -> None:
    """Build the random full-size model, its ONNX files and every mode once; record fidelity (manifest)."""
    seconds = prepare_modes(engines, lambda engine: encoder_for(engine, threads))
    variants = {e: encoder_for(e, threads).prepared.variant(*engine_mode(e)[:2]) for e in seconds}
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(),
                      "bytes": {e: v["bytes"] for e, v in variants.items()},
                      "fidelity": {e: v.get("fidelity") for e, v in variants.items()}}))


def summarise(runs: dict[str, dict[str, Any]], peaks: dict[str, float]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key, run in runs.items():
        engine, case = key.split("/")
        reference = runs.get(f"{PEER}/{case}")
        tokens_per_s = run["tokens"] / run["seconds"]
        gflops = 2 * NON_EMBEDDING_PARAMS * (LAYERS or 24) / 24 * tokens_per_s / 1e9
        row = {
            "texts_per_s": run["texts"] / run["seconds"],
            "tokens_per_s": tokens_per_s,
            "peak_rss_mb": run["peak_rss_mb"],
            "file_mb": run["file_bytes"] / 1e6,
            "gflops": gflops,
            "share_of_peak": gflops / peaks["int8" if "int8" in engine else "fp32"],
            **{k: run[k] for k in ("texts", "tokens", "seconds")},
        }
        if reference is not None:
            row["vs_flagembedding"] = row["texts_per_s"] / (reference["texts"] / reference["seconds"])
            ours = np.load(CACHE / f"{NAME}-{engine}-{case}.npy")
            theirs = np.load(CACHE / f"{NAME}-{PEER}-{case}.npy")
            cosines = (ours * theirs).sum(axis=1)
            row["dense_cos_mean"], row["dense_cos_min"] = float(cosines.mean()), float(cosines.min())
        summary[key] = row
    return summary


def best(summary: dict[str, Any]) -> str:
    """The fastest m3search engine on passages whose dense vectors keep mean cosine >= 0.99 to the peer."""
    ok = [k.split("/")[0] for k, r in summary.items()
          if k.endswith("/passages") and k.startswith("m3search") and r.get("dense_cos_mean", 0) >= 0.99]
    return max(ok, key=lambda e: summary[f"{e}/passages"]["texts_per_s"])


def markdown(result: dict[str, Any]) -> str:
    peaks = result["peak_gflops"]
    lines = [
        "# BGE-M3 encode benchmark (" + (f"BGE-M3's width, {LAYERS} layers" if LAYERS else "full-size architecture")
        + ", random weights, dense + sparse + ColBERT)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['threads']} threads; measured OpenVINO MatMul peaks: fp32 "
        f"{peaks['fp32']:.0f} GFLOP/s, int8 {peaks['int8']:.0f} GOP/s. Reproduce: `{result['command']}`.",
        "",
        "| case | engine | texts/s | tokens/s | vs FlagEmbedding fp32 | peak RSS (MB) | model file (MB) | GFLOP/s "
        "(% of peak) | dense cos vs FlagEmbedding |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, row in result["results"].items():
        engine, case = key.split("/")
        cos = f"{row['dense_cos_mean']:.4f} / {row['dense_cos_min']:.4f}" if "dense_cos_mean" in row else "-"
        lines.append(
            f"| {case} | {engine} | {row['texts_per_s']:.2f} | {row['tokens_per_s']:.0f} | "
            f"{row.get('vs_flagembedding', float('nan')):.2f}x | {row['peak_rss_mb']:.0f} | {row['file_mb']:.0f} | "
            f"{row['gflops']:.0f} ({100 * row['share_of_peak']:.0f} %) | {cos} |"
        )
    prep = result["prepare"]
    lines += ["", f"Best mode: **{result['best']}**. One-time preparation per mode (s): "
              + ", ".join(f"{e} {t:.0f}" for e, t in prep["seconds"].items())
              + f"; peak RSS {prep['peak_rss_mb']:.0f} MB.", "",
              "Engines ending in `@torch` are the same mode prepared by the torch exporter "
              "(`M3SEARCH_BUILDER=torch`, the path before the torch-free builder), measured in the same run.", "",
              "Fidelity to m3search fp32 on the bundled held-out sample (manifest):", ""]
    for key, figures in prep["fidelity"].items():
        if figures:
            lines.append(f"- {key}: dense cos {figures['dense_cos_mean']:.4f}, sparse cos "
                         f"{figures['sparse_cos_mean']:.4f}, sparse top-10 overlap "
                         f"{figures['sparse_top10_overlap']:.3f}, "
                         f"sparse weight error {figures['sparse_weight_error']:.4f}, ColBERT MaxSim error "
                         f"{figures['colbert_maxsim_error_mean']:.4f}")
    lines.append("")
    lines += [f"- {target}: {'met' if ok else 'NOT met'}" for target, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def targets(summary: dict[str, Any], top: str) -> dict[str, bool]:
    def get(key: str, field: str) -> float:
        return float(summary.get(key, {}).get(field, float("nan")))

    return {
        "best mode >= 4x FlagEmbedding fp32 texts/s (passages)": get(f"{top}/passages", "vs_flagembedding") >= 4.0,
        "best mode >= 40% of the measured MatMul peak of its precision": get(f"{top}/passages", "share_of_peak") >= 0.4,
        "best mode model file <= 650 MB": get(f"{top}/passages", "file_mb") <= 650,
        "best mode peak RSS on 8192-token documents <= 3 GB": get(f"{top}/long", "peak_rss_mb") <= 3072,
    }


def main() -> None:
    parser = base_parser(__doc__, ENGINES)
    parser.add_argument("--passages", type=int, default=32, help="passages of up to 512 tokens")
    parser.add_argument("--long", type=int, default=1, help="documents of 8192 tokens (0 skips the case)")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    engines = args.engines.split(",")
    if args.prepare:
        return prepare(engines, args.threads)
    if args.child:
        count = args.passages if args.child[1] == "passages" else args.long
        return child(args.child[0], args.child[1], count, args.threads)
    common = ["--passages", str(args.passages), "--long", str(args.long), "--threads", str(args.threads)]
    prep: dict[str, Any] = {"seconds": {}, "peak_rss_mb": 0.0}
    for engine in (e for e in engines if e.startswith("m3search")):  # one process each: memory is returned
        step = spawn(__file__, ["--prepare", "--engines", engine, *common])
        prep = {**{k: {**prep.get(k, {}), **step[k]} for k in ("seconds", "bytes", "fidelity")},
                "peak_rss_mb": max(prep["peak_rss_mb"], step["peak_rss_mb"])}
    runs = {}
    for case in ("passages", "long") if args.long else ("passages",):
        for engine in engines:
            if case == "long" and engine == "torch-bf16":
                continue
            print(f"running {engine} on {case} ...", flush=True)
            runs[f"{engine}/{case}"] = spawn(__file__, ["--child", engine, case, *common])
    peaks = {p: matmul_peak(p, args.threads) for p in ("fp32", "int8")}
    summary = summarise(runs, peaks)
    top = best(summary)
    result = {
        "command": (f"M3SEARCH_BENCH_LAYERS={LAYERS} " if LAYERS else "") + "python benchmarks/bench_bge_m3.py "
                   + " ".join(sys.argv[1:]),
        "machine": machine(),
        "versions": versions("m3search", "onnxruntime", "openvino", "nncf", "torch", "FlagEmbedding", "transformers"),
        "threads": args.threads, "peak_gflops": peaks, "prepare": prep, "results": summary, "best": top,
        "targets": targets(summary, top),
    }
    write_results(args.out, NAME, result, markdown(result))


if __name__ == "__main__":
    main()
