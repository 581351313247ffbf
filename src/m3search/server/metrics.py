"""Prometheus metrics of one server (own registry, so several apps in one process never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """Requests, latencies, merged batch sizes, queue depth and tokens."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("m3search_requests", "HTTP requests by route and status", ["method", "route",
                                "status"], registry=r)
        self.latency = Histogram("m3search_request_seconds", "HTTP request duration", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_texts = Histogram("m3search_batch_texts", "texts per merged inference call",
                                     buckets=SIZE_BUCKETS, registry=r)
        self.batch_tokens = Histogram("m3search_batch_tokens", "tokens per merged inference call",
                                      buckets=tuple(b * 16 for b in SIZE_BUCKETS), registry=r)
        self.inference = Counter("m3search_inference_seconds", "seconds the worker spent in inference calls",
                                 registry=r)
        self.queue_depth = Gauge("m3search_queue_depth", "embedding jobs queued or running", registry=r)
        self.tokens = Counter("m3search_tokens", "tokens embedded, by route", ["route"], registry=r)
        self.rejected = Counter("m3search_rejected", "requests refused with 429 (queue full)", registry=r)

    def observe_batch(self, texts: int, tokens: int, seconds: float) -> None:
        self.batch_texts.observe(texts)
        self.batch_tokens.observe(tokens)
        self.inference.inc(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
