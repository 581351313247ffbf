"""HTTP server under concurrent load vs offline encoding, in one run.

A MiniLM INT8 server (``m3search serve``) on 127.0.0.1; 1, 8, 32 and 64 concurrent clients (asyncio + httpx, one
process on the same machine) each send requests of 1-16 Cranfield sentences to ``POST /v1/embeddings`` (base64,
as the openai client does) for a bounded time. Reported: requests/s, texts/s, p50/p99 latency, errors by status,
the batcher's mean merge size, and texts/s as a fraction of offline ``encode`` throughput measured in the same run
(same model, precision, backend and threads, in a fresh process: all texts in one call), before and after the
load levels (their mean is the reference: this machine's speed drifts by up to a third between minutes).

Targets (issue #6): at 32 clients texts/s >= 80 % of offline; p99 <= 10x p50; no errors other than explicit 429.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, base_parser, cranfield_texts, machine, spawn, versions, write_results

MODEL = "all-minilm-l6-v2"


def sentences() -> list[str]:
    """Cranfield abstracts cut into sentences of 5-60 words (short texts, as embedding API callers send)."""
    found = []
    for abstract in cranfield_texts():
        for sentence in re.split(r"(?<=[.;])\s+", abstract):
            if 5 <= len(sentence.split()) <= 60:
                found.append(sentence)
    return found


def environment(home: Path, args: Any) -> dict[str, str]:
    return {**os.environ, "M3SEARCH_HOME": str(home), "M3SEARCH_PRECISION": args.precision,
            "M3SEARCH_BACKEND": args.backend, "M3SEARCH_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}


def offline(args: Any) -> dict[str, Any]:
    """Child mode: texts/s of one bulk ``encode`` call over a sample of the texts (after a warm-up)."""
    from m3search import load_encoder

    texts = sentences()
    rng = np.random.default_rng(1)
    sample = [texts[i] for i in rng.integers(0, len(texts), size=args.offline_texts)]
    encoder = load_encoder(MODEL)
    encoder.encode(sample[:64])
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        encoder.encode(sample)
        rates.append(len(sample) / (time.perf_counter() - start))
    return {"texts": len(sample), "texts_per_s": round(float(np.median(rates)), 1),
            "rounds": [round(r, 1) for r in rates], "precision": getattr(encoder, "precision", None),
            "backend": getattr(encoder, "backend", None)}


async def client_loop(http: Any, texts: list[str], seed: int, until: float, log: list[tuple[float, int, int]]) -> None:
    rng = np.random.default_rng(seed)
    while time.perf_counter() < until:
        batch = [texts[i] for i in rng.integers(0, len(texts), size=int(rng.integers(1, 17)))]
        start = time.perf_counter()
        try:
            response = await http.post("/v1/embeddings", json={"input": batch, "model": MODEL,
                                                               "encoding_format": "base64"})
            status = response.status_code
            if status == 200:  # decode like a client would, and check the shape
                data = response.json()["data"]
                assert len(data) == len(batch) and len(base64.b64decode(data[0]["embedding"])) == 384 * 4
            elif status == 429:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        except Exception as exc:
            print(f"client error: {exc!r}", file=sys.stderr)
            status = -1
        log.append((time.perf_counter() - start, status, len(batch)))


async def load(url: str, pid: int, texts: list[str], clients: int, seconds: float, warmup: float
               ) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        scratch: list[tuple[float, int, int]] = []
        until = time.perf_counter() + warmup
        await asyncio.gather(*(client_loop(http, texts, 1000 + c, until, scratch) for c in range(clients)))
        before = await batch_stats(http)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        loop0 = event_loop_seconds(pid)
        log: list[tuple[float, int, int]] = []
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(http, texts, c, start + seconds, log) for c in range(clients)))
        elapsed = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        loop1 = event_loop_seconds(pid)
        after = await batch_stats(http)
    ok = [(s, n) for s, status, n in log if status == 200]
    latencies = np.array([s for s, _ in ok]) * 1000
    statuses: dict[str, int] = {}
    for _, status, _ in log:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    merges = after[1] - before[1]
    return {
        "clients": clients, "seconds": round(elapsed, 2), "requests": len(ok),
        "requests_per_s": round(len(ok) / elapsed, 1), "texts_per_s": round(sum(n for _, n in ok) / elapsed, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1), "statuses": statuses,
        "mean_texts_per_inference": round((after[0] - before[0]) / merges, 1) if merges else None,
        "inference_busy": round((after[2] - before[2]) / elapsed, 3),
        "event_loop_cpu_share": round((loop1 - loop0) / elapsed, 3),
        "client_cpu_share": round((cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / elapsed, 3),
    }


def event_loop_seconds(pid: int) -> float:
    """CPU seconds of the server's main thread (the event loop: HTTP, JSON, auth, logs, metrics) so far."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def batch_stats(http: Any) -> tuple[float, float, float]:
    """(texts, inference calls, inference seconds) so far, from the server's Prometheus metrics."""
    text = (await http.get("/metrics")).text
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("m3search_batch_texts_", "m3search_inference_seconds_total"))}
    return (values.get("m3search_batch_texts_sum", 0.0), values.get("m3search_batch_texts_count", 0.0),
            values.get("m3search_inference_seconds_total", 0.0))


def start_server(env: dict[str, str], port: int, db: Path) -> subprocess.Popen[bytes]:
    import httpx

    log = open(db.parent / "server.log", "wb")  # noqa: SIM115 - closed with the process
    server = subprocess.Popen([str(Path(sys.executable).parent / "m3search"), "serve", "--model", MODEL, "--port",
                               str(port), "--preload", "--db", str(db), "--log-level", "warning"], env=env,
                              stdout=log, stderr=log)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}):\n"
                             + (db.parent / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not become ready")


def server_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def table(result: dict[str, Any]) -> str:
    off = result["offline"]["texts_per_s"]
    lines = ["# HTTP server under load (MiniLM INT8)", "",
             f"{result['config']}. Offline bulk `encode` in the same run: **{off} texts/s** (mean of "
             f"{result['offline']['before']['texts_per_s']} before and {result['offline']['after']['texts_per_s']} "
             f"after the load levels). "
             f"{result['machine']['cpu']}, {result['machine']['cores']} cores; clients run on the same machine. "
             f"Reproduce: `{result['command']}`.", "",
             "| clients | requests/s | texts/s | vs offline | p50 ms | p99 ms | p99/p50 | texts per inference | "
             "worker busy | event loop CPU | statuses | client CPU |", "|" + " --- |" * 12]
    for level in result["levels"]:
        lines.append(f"| {level['clients']} | {level['requests_per_s']} | {level['texts_per_s']} | "
                     f"{level['texts_per_s'] / off:.0%} | {level['p50_ms']} | {level['p99_ms']} | "
                     f"{level['p99_ms'] / level['p50_ms']:.1f} | {level['mean_texts_per_inference']} | "
                     f"{level['inference_busy']:.0%} | {level['event_loop_cpu_share']:.0%} | "
                     f"{json.dumps(level['statuses'])} | "
                     f"{level['client_cpu_share']:.0%} |")
    lines += ["", f"Server peak RSS: {result['server_peak_rss_mb']:.0f} MB.", ""]
    lines += [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


def targets(levels: list[dict[str, Any]], offline_rate: float) -> dict[str, bool]:
    at32 = next((lv for lv in levels if lv["clients"] == 32), None)
    return {
        "32 clients: texts/s >= 80% of offline": bool(at32 and at32["texts_per_s"] >= 0.8 * offline_rate),
        "p99 <= 10x p50 at every level": all(lv["p99_ms"] <= 10 * lv["p50_ms"] for lv in levels),
        "no errors other than 429": all(set(lv["statuses"]) <= {"200", "429"} for lv in levels),
    }


def main() -> None:
    parser = base_parser(__doc__, ())
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--precision", default="int8-dynamic")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--offline-texts", type=int, default=1500)
    parser.add_argument("--offline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    home = ROOT / ".cache" / "server-home"
    if args.offline:
        print(json.dumps(offline(args)))
        return
    env = environment(home, args)
    os.environ.update({k: env[k] for k in ("M3SEARCH_HOME", "M3SEARCH_PRECISION", "M3SEARCH_BACKEND",
                                           "M3SEARCH_THREADS", "HF_HUB_OFFLINE")})
    child = ["--offline", "--offline-texts", str(args.offline_texts), "--precision", args.precision, "--backend",
             args.backend, "--threads", str(args.threads)]
    before = spawn(__file__, child)
    texts = sentences()
    levels = []
    with tempfile.TemporaryDirectory() as scratch:
        port = 18019
        server = start_server(env, port, Path(scratch) / "index.sqlite3")
        try:
            for clients in (int(c) for c in args.clients.split(",")):
                level = asyncio.run(load(f"http://127.0.0.1:{port}", server.pid, texts, clients, args.seconds,
                                         args.warmup))
                print(json.dumps(level), file=sys.stderr)
                levels.append(level)
            rss = server_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    after = spawn(__file__, child)  # this machine's speed drifts: the reference is the mean of before and after
    offline_result = {"texts_per_s": round((before["texts_per_s"] + after["texts_per_s"]) / 2, 1),
                      "before": before, "after": after}
    result = {
        "machine": machine(), "versions": versions("m3search", "onnxruntime", "fastapi", "uvicorn", "httpx"),
        "command": "python benchmarks/bench_server.py " + " ".join(sys.argv[1:]),
        "config": f"{MODEL} {args.precision} on {args.backend}, {args.threads} threads, requests of 1-16 "
                  f"Cranfield sentences ({len(texts)} sentences, 5-60 words), {args.seconds:.0f} s per level after "
                  f"{args.warmup:.0f} s warm-up",
        "offline": offline_result, "levels": levels, "server_peak_rss_mb": rss,
        "targets": targets(levels, offline_result["texts_per_s"]),
    }
    write_results(args.out, "server", result, table(result))


if __name__ == "__main__":
    main()
