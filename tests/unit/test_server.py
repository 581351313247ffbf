"""Route tests of the HTTP service with the fake three-output encoder (every endpoint and error code)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import FakeM3Encoder
from tests.http import expect_error as _error


def _direct(texts: list[str], **kwargs: Any) -> np.ndarray:
    return np.stack([e.dense for e in FakeM3Encoder(_spec()).encode(texts, **kwargs)])


def _spec() -> Any:
    from tests.conftest import FAKE_M3_SPEC

    return FAKE_M3_SPEC


# embeddings ------------------------------------------------------------------------------------------


def test_openai_embeddings_match_direct_encoding(client: TestClient) -> None:
    texts = ["the wing flow", "heat transfer", "a b c"]
    body = client.post("/v1/embeddings", json={"input": texts, "model": "hash"}).json()
    assert body["object"] == "list" and body["model"] == "hash"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    got = np.array([d["embedding"] for d in body["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, _direct(texts), atol=1e-6)
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    single = client.post("/v1/embeddings", json={"input": "the wing flow"}).json()  # default model, one string
    np.testing.assert_allclose(single["data"][0]["embedding"], got[0], atol=1e-6)


def test_openai_base64_and_matryoshka_dimensions(client: TestClient) -> None:
    texts = ["the wing flow", "heat transfer"]
    b64 = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in b64["data"]])
    np.testing.assert_allclose(decoded, _direct(texts), atol=1e-7)
    cut = client.post("/v1/embeddings", json={"input": texts, "dimensions": 32}).json()
    vectors = np.array([d["embedding"] for d in cut["data"]])
    assert vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = _direct(texts)[:, :32]
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)
    message = _error(client.post("/v1/embeddings", json={"input": texts, "dimensions": 50}), 400,
                     "invalid_dimensions")
    assert "64, 32, 16" in message


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"input": []}, 400, "invalid_input"),
        ({"input": ["fine", "   "]}, 400, "invalid_input"),
        ({"input": [[1, 2, 3]]}, 400, "invalid_input"),
        ({"input": "x", "model": "no-such-model"}, 404, "model_not_found"),
        ({"input": "x", "encoding_format": "int8"}, 400, "invalid_request"),
        ({"model": "hash"}, 400, "invalid_request"),
        ({"input": " ".join(["word"] * 100), "on_overflow": "error"}, 413, "input_too_long"),
    ],
)
def test_openai_errors(client: TestClient, payload: dict[str, Any], status: int, code: str) -> None:
    response = client.post("/v1/embeddings", json=payload)
    _error(response, status, code)
    if code == "invalid_request":
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_long_inputs_are_truncated_by_default_and_counted(client: TestClient) -> None:
    body = client.post("/v1/embeddings", json={"input": " ".join(["word"] * 100)}).json()
    assert body["usage"]["prompt_tokens"] == 64  # the fake model's max_tokens


def test_simple_embeddings_and_encode(client: TestClient) -> None:
    texts = ["the wing flow", "heat transfer"]
    simple = client.post("/embeddings", json={"texts": texts}).json()
    assert simple["model"] == "hash" and simple["dim"] == 64
    np.testing.assert_allclose(simple["embeddings"], _direct(texts), atol=1e-6)
    encoded = client.post("/api/v1/encode", json={"texts": texts, "outputs": ["dense", "sparse", "colbert"],
                                                  "kind": "query"}).json()
    direct = FakeM3Encoder(_spec()).encode_queries(texts, outputs=["dense", "sparse", "colbert"])
    for item, expected in zip(encoded["data"], direct, strict=True):
        np.testing.assert_allclose(item["dense"], expected.dense, atol=1e-6)
        assert item["sparse"]["indices"] == expected.sparse.indices.tolist()
        np.testing.assert_allclose(item["sparse"]["values"], expected.sparse.values, atol=1e-6)
        np.testing.assert_allclose(item["colbert"], expected.colbert, atol=1e-6)
        assert item["tokens"] == expected.tokens and item["truncated"] is False
    only_sparse = client.post("/api/v1/encode", json={"texts": texts, "outputs": ["sparse"]}).json()
    assert "dense" not in only_sparse["data"][0] and "sparse" in only_sparse["data"][0]
    _error(client.post("/api/v1/encode", json={"texts": texts, "outputs": ["image"]}), 400)
    _error(client.post("/api/v1/encode", json={"texts": texts, "max_length": 10_000}), 400)


def test_models_lists_the_registry(client: TestClient) -> None:
    client.post("/v1/embeddings", json={"input": "x"})
    models = {m["id"]: m for m in client.get("/api/v1/models").json()["data"]}
    assert models["nomic-embed-text-v1.5"]["matryoshka_dims"] == [768, 512, 256, 128, 64]
    assert models["hash"]["loaded"] and not models["bge-m3"]["loaded"]


# limits, auth, ids, logs, metrics ----------------------------------------------------------------------


def test_body_and_input_limits(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_request_bytes=2000, max_inputs=3)
    big = {"input": ["word " * 500]}
    _error(client.post("/v1/embeddings", json=big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced on the bytes received
        data = json.dumps(big).encode()
        for start in range(0, len(data), 500):
            yield data[start : start + 500]

    response = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    _error(response, 413)
    _error(client.post("/v1/embeddings", json={"input": ["a", "b", "c", "d"]}), 413, "payload_too_large")
    assert client.post("/v1/embeddings", json={"input": ["a", "b", "c"]}).status_code == 200


def test_api_keys(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys=["k-one", "k-two"])
    payload = {"input": "x"}
    response = client.post("/v1/embeddings", json=payload)
    _error(response, 401, "invalid_api_key")
    assert response.headers["www-authenticate"] == "Bearer"
    _error(client.post("/v1/embeddings", json=payload, headers={"Authorization": "Bearer nope"}), 401)
    _error(client.post("/v1/embeddings", json=payload, headers={"Authorization": "Basic k-one"}), 401)
    for key in ("k-one", "k-two"):
        assert client.post("/v1/embeddings", json=payload, headers={"Authorization": f"Bearer {key}"}).status_code \
            == 200
    assert client.get("/health").status_code == 200  # liveness stays open
    assert client.get("/").status_code == 200  # the page (it asks for the key)
    assert client.get("/docs").status_code == 200 and client.get("/static/swagger/swagger-ui.css").status_code == 200
    _error(client.get("/metrics"), 401)
    _error(client.get("/api/v1/collections"), 401)


def test_keys_are_compared_in_constant_time(make_client: Callable[..., TestClient],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = make_client(api_keys=["k-one", "k-two"])
    client.get("/api/v1/models", headers={"Authorization": "Bearer k-one"})
    assert compared == [(b"k-one", b"k-one"), (b"k-one", b"k-two")]  # every key, no early exit


def test_request_ids_and_json_logs_without_texts(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    from m3search.server.logs import JsonFormatter

    with caplog.at_level(logging.INFO, logger="m3search.server"):
        given = client.post("/v1/embeddings", json={"input": "secret words"}, headers={"X-Request-ID": "abc-123"})
        made = client.get("/health")
        odd = client.get("/health", headers={"X-Request-ID": "x" * 300})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32 and len(odd.headers["x-request-id"]) == 32
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "request"]
    first = next(line for line in lines if line["request_id"] == "abc-123")
    assert first["status"] == 200 and first["tokens"] == 2 and first["route"] == "/v1/embeddings"
    assert first["duration_ms"] > 0
    assert all("secret" not in json.dumps(line) for line in lines)


def test_metrics(client: TestClient) -> None:
    for texts in (["a b"], ["c d e", "f"]):
        client.post("/v1/embeddings", json={"input": texts})
    text = client.get("/metrics").text
    assert 'm3search_requests_total{method="POST",route="/v1/embeddings",status="200"} 2.0' in text
    assert 'm3search_tokens_total{route="/v1/embeddings"} 6.0' in text
    assert "m3search_batch_texts_count 2.0" in text and "m3search_batch_texts_sum 3.0" in text
    assert "m3search_queue_depth 0.0" in text
    assert 'm3search_request_seconds_count{route="/v1/embeddings"} 2.0' in text


def test_ready_turns_200_once_the_model_is_loaded(make_client: Callable[..., TestClient]) -> None:
    lazy = make_client()
    assert lazy.get("/ready").status_code == 503
    lazy.post("/v1/embeddings", json={"input": "x"})
    assert lazy.get("/ready").status_code == 200
    preloaded = make_client(preload=True)
    deadline = time.monotonic() + 10
    while preloaded.get("/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert preloaded.get("/ready").json() == {"status": "ready", "model": "hash"}


def test_uniform_errors_openapi_and_no_cors(client: TestClient) -> None:
    _error(client.get("/no/such/route"), 404)
    _error(client.get("/v1/embeddings"), 405)
    _error(client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}), 400)
    schema = client.get("/openapi.json").json()
    for path in ("/v1/embeddings", "/embeddings", "/api/v1/encode", "/api/v1/search", "/api/v1/embedding-configs",
                 "/api/v1/embedding-sets", "/api/v1/collections/{name}/documents", "/health", "/ready", "/metrics"):
        assert path in schema["paths"], path
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text  # Swagger UI's files are served locally: /docs works offline
    asset = client.get("/static/swagger/swagger-ui-bundle.js")
    assert asset.status_code == 200 and len(asset.content) > 100_000
    preflight = client.options("/v1/embeddings", headers={"Origin": "http://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_when_configured(make_client: Callable[..., TestClient]) -> None:
    client = make_client(cors_origins=["http://app.local"])
    response = client.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": "http://app.local"})
    assert response.headers["access-control-allow-origin"] == "http://app.local"


def test_a_nan_vector_is_a_json_500_not_a_traceback(client: TestClient) -> None:
    message = _error(client.post("/v1/embeddings", json={"input": ["poison word"]}), 500, "non_finite_embedding")
    assert "NaN" in message


def test_a_large_request_body_gives_its_memory_back(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from m3search.server import middleware

    trims: list[int] = []
    monkeypatch.setattr(middleware, "trim_heap", lambda: trims.append(1))
    assert client.post("/v1/embeddings", json={"input": ["small"]}).status_code == 200
    assert trims == []
    big = {"input": ["word " * 250_000]}  # 1.25 MB
    assert client.post("/v1/embeddings", json=big).status_code == 200
    assert trims == [1]
