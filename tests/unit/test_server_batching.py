"""Dynamic batching: merged requests get exactly their own vectors; bounded queue; one bad input fails alone;
and the same over real HTTP (uvicorn on 127.0.0.1) with the official openai client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from m3search.errors import NonFiniteEmbeddingError, OverloadedError
from m3search.server.app import create_app
from m3search.server.batching import Batcher
from m3search.settings import get_settings
from m3search.types import Embedding
from tests.conftest import FAKE_M3_SPEC, FakeM3Encoder
from tests.live import live_server
from tests.references import import_or_skip

TEXTS = [f"text {i} about {'wing flow ' * (i % 5)} and heat {i * 7}" for i in range(40)]


def _direct(texts: list[str]) -> np.ndarray:
    return np.stack([e.dense for e in FakeM3Encoder(FAKE_M3_SPEC).encode(texts)])


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _batcher(**kwargs: Any) -> tuple[Batcher, list[int]]:
    merges: list[int] = []
    batcher = Batcher(max_queue=kwargs.pop("max_queue", 64), merge_tokens=kwargs.pop("merge_tokens", 100_000),
                      on_batch=lambda texts, tokens, seconds: merges.append(texts))
    batcher.start()
    return batcher, merges


def test_waiting_requests_are_merged_and_each_gets_its_own_vectors() -> None:
    encoder = FakeM3Encoder(FAKE_M3_SPEC)
    encoder.gate = threading.Event()
    batcher, merges = _batcher()
    groups = [TEXTS[i : i + 5] for i in range(0, 40, 5)]
    futures = []
    for group in groups:
        futures.append(batcher.submit(encoder, encoder.tokenize(group), frozenset({"dense"})))
        if len(futures) == 1:
            _wait(lambda: batcher.depth == 1 and not batcher._waiting)  # the first job is running alone
    encoder.gate.set()
    for group, future in zip(groups, futures, strict=True):
        got = np.stack([e.dense for e in future.result(10)])
        np.testing.assert_allclose(got, _direct(group), atol=1e-6)
    batcher.stop()
    assert merges == [5, 35]  # the seven requests that waited ran as one inference call


def test_merges_respect_the_token_budget_and_the_outputs() -> None:
    encoder = FakeM3Encoder(FAKE_M3_SPEC)
    encoder.gate = threading.Event()
    batcher, merges = _batcher(merge_tokens=20)
    first = batcher.submit(encoder, encoder.tokenize(["a b"]), frozenset({"dense"}))
    _wait(lambda: not batcher._waiting)
    sparse = batcher.submit(encoder, encoder.tokenize(["c d"]), frozenset({"sparse"}))
    dense = [batcher.submit(encoder, encoder.tokenize(["one two three four five six seven"]), frozenset({"dense"}))
             for _ in range(4)]  # 7 tokens each: two fit in 20
    encoder.gate.set()
    for future in (first, sparse, *dense):
        future.result(10)
    batcher.stop()
    assert merges == [1, 1, 2, 2]  # oldest first: the sparse job alone, then the dense ones two by two
    assert sparse.result()[0].sparse is not None and sparse.result()[0].dense is None


def test_a_full_queue_refuses_with_a_retry_hint_and_stop_finishes_queued_work() -> None:
    encoder = FakeM3Encoder(FAKE_M3_SPEC)
    encoder.gate = threading.Event()
    batcher, _ = _batcher(max_queue=2)
    held = [batcher.submit(encoder, encoder.tokenize(["a"]), frozenset({"dense"})) for _ in range(2)]
    with pytest.raises(OverloadedError) as refused:
        batcher.submit(encoder, encoder.tokenize(["b"]), frozenset({"dense"}))
    assert refused.value.retry_after >= 1
    encoder.gate.set()
    batcher.stop()
    assert all(f.done() and f.result()[0].dense is not None for f in held)


def test_one_poisoned_input_fails_only_its_own_request() -> None:
    encoder = FakeM3Encoder(FAKE_M3_SPEC)
    encoder.gate = threading.Event()
    batcher, _ = _batcher()
    futures: list[Future[list[Embedding]]] = [batcher.submit(encoder, encoder.tokenize(["warm"]), frozenset({"dense"}))]
    _wait(lambda: not batcher._waiting)
    for texts in (["good one"], ["poison here"], ["good two"]):
        futures.append(batcher.submit(encoder, encoder.tokenize(texts), frozenset({"dense"})))
    encoder.gate.set()
    assert futures[1].result(10)[0].dense is not None and futures[3].result(10)[0].dense is not None
    with pytest.raises(NonFiniteEmbeddingError):
        futures[2].result(10)
    batcher.stop()


# over HTTP -------------------------------------------------------------------------------------------


def _app(fake_loader: Callable[..., Any], tmp_path: Path, **settings: Any) -> Any:
    return create_app(get_settings(**settings), model="hash", loader=fake_loader, db=tmp_path / "db.sqlite3")


def test_concurrent_http_clients_get_their_own_vectors(fake_loader: Callable[..., Any], tmp_path: Path) -> None:
    encoder = fake_loader("hash", None, None)
    encoder.gate = threading.Event()
    rng = np.random.default_rng(0)
    requests = [list(rng.choice(TEXTS, size=int(rng.integers(1, 9)))) for _ in range(24)]
    with live_server(_app(fake_loader, tmp_path)) as url, httpx.Client(base_url=url, timeout=30) as http, \
            ThreadPoolExecutor(max_workers=24) as pool:
        futures = [pool.submit(http.post, "/v1/embeddings", json={"input": texts}) for texts in requests]
        _wait(lambda: "m3search_queue_depth 24.0" in http.get("/metrics").text)
        encoder.gate.set()
        for texts, future in zip(requests, futures, strict=True):
            response = future.result()
            got = np.array([d["embedding"] for d in response.json()["data"]])
            np.testing.assert_allclose(got, _direct(texts), atol=1e-6)
        metrics = http.get("/metrics").text
    calls = next(line.split()[-1] for line in metrics.splitlines() if line.startswith("m3search_batch_texts_count"))
    assert calls == "2.0"  # the first request alone, then the 23 that queued behind it as one call


def test_http_429_with_retry_after_when_the_queue_is_full(fake_loader: Callable[..., Any], tmp_path: Path) -> None:
    encoder = fake_loader("hash", None, None)
    encoder.gate = threading.Event()
    with live_server(_app(fake_loader, tmp_path, max_queue=2)) as url, httpx.Client(base_url=url, timeout=30) as http, \
            ThreadPoolExecutor(max_workers=2) as pool:
        held = [pool.submit(http.post, "/v1/embeddings", json={"input": ["a"]}) for _ in range(2)]
        _wait(lambda: "m3search_queue_depth 2.0" in http.get("/metrics").text)
        refused = http.post("/v1/embeddings", json={"input": ["b"]})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        encoder.gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert "m3search_rejected_total 1.0" in http.get("/metrics").text


def test_the_official_openai_client(fake_loader: Callable[..., Any], tmp_path: Path) -> None:
    openai = import_or_skip("openai", "the openai client (dev) is not installed")
    texts = ["the wing flow", "heat transfer at high speed"]
    with live_server(_app(fake_loader, tmp_path, api_keys=["sk-local"])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-local", max_retries=0)
        result = client.embeddings.create(model="hash", input=texts)  # the client asks for base64 by default
        got = np.array([d.embedding for d in result.data])
        np.testing.assert_allclose(got, _direct(texts), atol=1e-6)
        assert result.usage.prompt_tokens == 8 and result.model == "hash"
        floats = client.embeddings.create(model="hash", input=texts[0], encoding_format="float", dimensions=16)
        assert len(floats.data[0].embedding) == 16
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="no-such-model", input="x")
        with pytest.raises(openai.BadRequestError, match="Matryoshka"):
            client.embeddings.create(model="hash", input="x", dimensions=20)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).embeddings.create(model="hash",
                                                                                                 input="x")
