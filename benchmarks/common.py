"""Shared helpers of the benchmark scripts: machine facts, versions, child processes, peak RSS."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent


def cranfield_texts() -> list[str]:
    """The 1398 Cranfield abstracts (``data/cranfield/corpus.jsonl``, built by ``data/make_data.py``)."""
    lines = (ROOT / "data" / "cranfield" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


def cranfield_spans(count: int, low: int, high: int, seed: int) -> list[str]:
    """``count`` deterministic texts of ``low``-``high`` consecutive words from the Cranfield abstracts."""
    words = " ".join(cranfield_texts()).split()
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        n = rng.randint(low, high)
        start = rng.randint(0, len(words) - n)
        result.append(" ".join(words[start : start + n]))
    return result


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_flags() -> list[str]:
    """The instruction-set flags that decide which kernels run (engines compare only within one machine)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in SIMD_FLAGS if flag in present]
    return []


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "flags": cpu_flags(), "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version()}


def versions(*packages: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def spawn(script: str, args: list[str]) -> dict[str, Any]:
    """Run ``script`` with ``args`` in a fresh interpreter; its last stdout line is a JSON object."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def base_parser(doc: str | None, engines: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options every benchmark shares: threads, engines, output folder, and the hidden child modes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every engine")
    parser.add_argument("--engines", default=",".join(engines), help="comma-separated engines to run")
    parser.add_argument("--out", type=Path, default=ROOT / "results", help="where NAME.json and NAME.md go")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    return parser


def write_results(out: Path, name: str, result: dict[str, Any], table: str) -> None:
    """Write ``NAME.json`` (every figure) and ``NAME.md`` (the table), and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(table)
    print(table)


def matmul_peak(precision: str, threads: int, m: int = 2048, k: int = 2048, n: int = 2048) -> float:
    """Measured GFLOP/s (GOP/s for int8) of one large MatMul on OpenVINO CPU, in fp32 or static INT8.

    This is the bar for "achieved throughput as a share of the measured peak": the same engine, threads and
    instructions (AVX-512 FMA for fp32, VNNI for int8) as the model's own MatMuls. For fp32 the torch (oneDNN)
    GEMM rate is measured too and the higher of the two is the peak.
    """
    import time

    import nncf
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([m, k], ov.Type.f32, name="x")
    w = ops.constant((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))
    model = ov.Model([ops.matmul(x, w, False, False)], [x], "matmul")
    sample = rng.standard_normal((m, k)).astype(np.float32)
    if precision.startswith("int8"):
        model = nncf.quantize(model, nncf.Dataset([sample]), subset_size=1)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                       "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: sample})
    best = float("inf")
    for _ in range(5):  # the best of five rounds: a peak, robust to a moment of other load
        start = time.perf_counter()
        for _ in range(5):
            request.infer({0: sample})
        best = min(best, (time.perf_counter() - start) / 5)
    rate = 2 * m * k * n / best / 1e9
    if precision.startswith("int8"):
        return rate
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = min(best, (time.perf_counter() - start) / 5)
    return max(rate, 2 * m * k * n / best / 1e9)


def openvino_profile(xml: Path, feeds: list[dict[str, Any]], threads: int, top: int = 8) -> list[dict[str, Any]]:
    """Share of OpenVINO CPU time per operator type (and kernel) over ``feeds``, largest first."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                                         "PERF_COUNT": True})
    request = compiled.create_infer_request()
    totals: dict[str, float] = {}
    for feed in feeds:
        request.infer(feed)
        for info in request.profiling_info:
            key = f"{info.node_type} ({info.exec_type})"
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds()
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "share": seconds / whole} for op, seconds in ranked]


def prepare_modes(engines: list[str], make: Any) -> dict[str, float]:
    """Build (export, quantize, fidelity-check) each m3search engine's mode once; seconds per engine."""
    import time

    seconds = {}
    for engine in engines:
        if engine.startswith("m3search"):
            start = time.perf_counter()
            make(engine).encode(["x"])
            seconds[engine] = time.perf_counter() - start
    return seconds


BACKENDS = {"ort": "onnxruntime", "ov": "openvino"}
TORCH_SUFFIX = "@torch"  # the same mode prepared by the torch exporter (M3SEARCH_BUILDER=torch), the path before


def engine_mode(engine: str) -> tuple[str, str, str]:
    """(backend, precision, builder) of an m3search engine name such as ``m3search-ov-int8-static@torch``."""
    name, _, builder = engine.partition("@")
    _, backend, precision = name.split("-", 2)
    return BACKENDS[backend], precision, builder or "auto"
