"""Load and soak: a real ``m3search serve`` (hash model) on 127.0.0.1 under 64 concurrent clients mixing embedding
requests and searches. Only 200 and explicit 429 answers, bounded RSS, p50/p99 reported; the soak samples RSS every
10 s and checks it does not keep growing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.live import free_port, wait_until_up
from tests.references import import_or_skip

httpx = import_or_skip("httpx", "httpx is in the dev extra")

CLI = [sys.executable, "-c", "from m3search.cli.app import main; main()"]
RSS_BOUND_MB = 400  # the hash model server measured ~110 MB under this load
WORDS = ["boundary", "layer", "shock", "wave", "heat", "transfer", "wing", "flow", "plate", "nozzle", "jet",
         "laminar", "turbulent"]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen([*CLI, "serve", "--port", str(port), "-m", "hash", "--db", str(tmp_path / "l.sqlite3"),
                               "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "M3SEARCH_HOME": str(tmp_path / "home"), "M3SEARCH_MAX_QUEUE": "32"})
    base = f"http://127.0.0.1:{port}"
    wait_until_up(base)
    client = httpx.Client(base_url=base, timeout=30)
    client.put("/api/v1/embedding-configs/h", json={"id": "h", "model": "hash"})
    client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "h"})
    rng = random.Random(0)
    docs = [{"id": f"d{i}", "text": " ".join(rng.choices(WORDS, k=60))} for i in range(500)]
    assert client.post("/api/v1/collections/kb/documents", json={"documents": docs}).status_code == 200
    return server, base


async def _client(base: str, until: float, seed: int, statuses: dict[int, int], latencies: list[float]) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        while time.monotonic() < until:
            start = time.perf_counter()
            if rng.random() < 0.6:
                texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 40))) for _ in range(rng.randint(1, 16))]
                response = await client.post("/v1/embeddings", json={"input": texts})
            else:
                response = await client.get("/api/v1/search", params={
                    "q": " ".join(rng.choices(WORDS, k=4)), "collection": "kb",
                    "strategy": rng.choice(["dense", "bm25", "hybrid"])})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            elif response.status_code == 429:
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


def run_load(tmp_path: Path, clients: int, seconds: float, sample_every: float) -> dict[str, Any]:
    server, base = _start(tmp_path)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        begin = time.monotonic()
        while not stop.is_set():
            samples.append((time.monotonic() - begin, _rss_mb(server.pid)))
            stop.wait(sample_every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    until = time.monotonic() + seconds

    async def main() -> None:
        await asyncio.gather(*(_client(base, until, i, statuses, latencies) for i in range(clients)))

    try:
        asyncio.run(main())
    finally:
        stop.set()
        sampler.join()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    values = np.array(latencies) * 1000
    return {"clients": clients, "seconds": seconds, "requests": sum(statuses.values()),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "p50_ms": round(float(np.percentile(values, 50)), 1), "p99_ms": round(float(np.percentile(values, 99)), 1),
            "peak_rss_mb": round(max(r for _, r in samples), 1), "rss_samples": [(round(t), round(r, 1))
                                                                                for t, r in samples]}


@pytest.mark.slow
def test_64_clients_for_60_seconds(tmp_path: Path, record: Callable[..., None]) -> None:
    result = run_load(tmp_path, clients=64, seconds=60, sample_every=1.0)
    record("load", "64 clients, 60 s, 60 % embeddings (1-16 texts) / 40 % searches",
           {k: v for k, v in result.items() if k != "rss_samples"})
    assert set(result["statuses"]) <= {"200", "429"}, result["statuses"]
    assert result["statuses"].get("200", 0) > 1000
    assert result["peak_rss_mb"] < RSS_BOUND_MB


@pytest.mark.slow
def test_soak_rss_does_not_keep_growing(tmp_path: Path, record: Callable[..., None]) -> None:
    """Ten minutes (M3SEARCH_SOAK_SECONDS) of 16 clients; RSS sampled every 10 s. After the first minute (caches
    and allocator pools fill), the fitted RSS trend must stay under 2 MB per minute."""
    seconds = float(os.environ.get("M3SEARCH_SOAK_SECONDS", "600"))
    result = run_load(tmp_path, clients=16, seconds=seconds, sample_every=10.0)
    later = [(t, r) for t, r in result["rss_samples"] if t >= 60]
    slope = float(np.polyfit([t for t, _ in later], [r for _, r in later], 1)[0]) * 60 if len(later) > 2 else 0.0
    record("load", "soak, 16 clients", {**{k: v for k, v in result.items() if k != "rss_samples"},
                                        "rss_trend_mb_per_min": round(slope, 3),
                                        "rss_samples": result["rss_samples"]})
    assert set(result["statuses"]) <= {"200", "429"}, result["statuses"]
    assert slope < 2.0, result["rss_samples"]
