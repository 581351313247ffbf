"""Embedding configs, embedding sets (background re-embedding), documents with auto-embed rules, and search
over HTTP, with the fake three-output encoder: every test on an SQLite store and on an embedded Qdrant store."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m3search.retrieval.defaults import save_fusion
from m3search.retrieval.fusion import FusionSettings
from tests.http import DOCS
from tests.http import expect_error as _error
from tests.references import import_or_skip

CONFIG = {"id": "fake", "model": "hash"}


@pytest.fixture(params=["sqlite", "qdrant-edge"])
def client(request: pytest.FixtureRequest, make_client: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    if request.param == "sqlite":
        return make_client()
    import_or_skip("qdrant_edge", "qdrant-edge-py is in the dev extra")
    return make_client(store_url=f"qdrant+edge:///{tmp_path}/edge")


def _collection(client: TestClient, name: str = "kb", **set_fields: Any) -> dict[str, Any]:
    assert client.put("/api/v1/embedding-configs/fake", json=CONFIG).status_code in (200, 201)
    created = client.post("/api/v1/embedding-sets", json={"collection": name, "embedding_config_id": "fake",
                                                           **set_fields})
    assert created.status_code == 201, created.text
    return dict(created.json())


def _wait_for(client: TestClient, set_id: int, state: str = "done") -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body = client.get(f"/api/v1/embedding-sets/{set_id}").json()
        if body["job"] and body["job"]["state"] == state:
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_embedding_configs_are_validated_against_the_model(client: TestClient) -> None:
    made = client.post("/api/v1/embedding-configs", json={"id": "nomic", "model": "nomic-embed-text-v1.5",
                                                          "default_truncate_dim": 256})
    assert made.status_code == 201
    assert made.json()["matryoshka_dims"] == [768, 512, 256, 128, 64] and made.json()["supports_mrl"] is True
    got = client.get("/api/v1/embedding-configs/nomic").json()
    assert got["default_truncate_dim"] == 256 and got["dim"] == 768
    _error(client.post("/api/v1/embedding-configs", json={"id": "nomic", "model": "hash"}), 409)
    message = _error(client.post("/api/v1/embedding-configs", json={
        "id": "bad", "model": "nomic-embed-text-v1.5", "matryoshka_dims": [768, 300]}), 400, "invalid_dimensions")
    assert "300" in message and "768, 512, 256, 128, 64" in message
    _error(client.post("/api/v1/embedding-configs", json={"id": "bad", "model": "bge-large-en-v1.5",
                                                          "supports_mrl": True}), 400, "invalid_dimensions")
    _error(client.post("/api/v1/embedding-configs", json={"id": "bad", "model": "nomic-embed-text-v1.5",
                                                          "matryoshka_dims": [768, 256],
                                                          "default_truncate_dim": 128}), 400)
    _error(client.post("/api/v1/embedding-configs", json={"id": "bad", "model": "nope"}), 404, "model_not_found")
    _error(client.post("/api/v1/embedding-configs", json={"id": "../etc", "model": "hash"}), 400)
    mismatch = _error(client.put("/api/v1/embedding-configs/nomic", json={"id": "other", "model": "hash"}), 400)
    assert "'other'" in mismatch and "'nomic'" in mismatch  # the body's id never silently loses to the path's
    replaced = client.put("/api/v1/embedding-configs/nomic", json={"id": "nomic", "model": "nomic-embed-text-v1.5",
                                                                   "matryoshka_dims": [768, 128]})
    assert replaced.status_code == 200 and replaced.json()["id"] == "nomic"
    assert [c["id"] for c in client.get("/api/v1/embedding-configs").json()] == ["nomic"]
    assert client.delete("/api/v1/embedding-configs/nomic").status_code == 204
    _error(client.get("/api/v1/embedding-configs/nomic"), 404, "not_found")


def test_documents_search_and_breakdowns(client: TestClient) -> None:
    created = _collection(client, colbert=True)
    assert created["status"] == "active" and created["outputs"] == ["dense", "sparse", "colbert"]
    written = client.post("/api/v1/collections/kb/documents", json={"documents": DOCS}).json()
    assert written == {"collection": "kb", "added": 3, "updated": 0, "unchanged": 0, "chunks": 3, "embedded": True,
                       "pending": 0}
    for strategy in ("dense", "sparse", "bm25", "hybrid", "weighted", "all", "colbert"):
        result = client.get("/api/v1/search", params={"q": "laminar wing flow", "collection": "kb",
                                                      "strategy": strategy, "k": 2}).json()
        assert result["hits"][0]["document_id"] == "wing", strategy
        assert set(result["hits"][0]["breakdown"]) <= set(result["retrievers"]) and result["hits"][0]["breakdown"]
    posted = client.post("/api/v1/search", json={"q": "stromung", "collection": "kb", "strategy": "bm25",
                                                 "filters": {"lang": "de"}}).json()
    assert [h["document_id"] for h in posted["hits"]] == ["flug"]
    filtered = client.get("/api/v1/search", params=[("q", "the wing"), ("collection", "kb"), ("strategy", "dense"),
                                                    ("filter", "lang=de")]).json()
    assert {h["document_id"] for h in filtered["hits"]} == {"flug"}
    dbsf = client.get("/api/v1/search", params={"q": "laminar wing flow", "collection": "kb", "strategy": "hybrid",
                                                "fusion": "dbsf"}).json()
    assert dbsf["hits"][0]["document_id"] == "wing" and dbsf["fusion"] == "dbsf" and "rrf_k" not in dbsf
    _check_fusion_settings(client)
    two = client.get("/api/v1/search", params={"q": "wing flow", "collection": "kb", "strategy": "two_stage",
                                               "coarse_dim": 16, "coarse_k": 3})
    if client.get("/health").status_code == 200 and two.status_code == 400:  # a Qdrant store: one dim per vector
        assert "not supported by Qdrant stores" in two.json()["error"]["message"]
    else:
        assert two.json()["hits"][0]["document_id"] == "wing" and two.json()["coarse_dim"] == 16
        message = _error(client.get("/api/v1/search", params={"q": "wing", "collection": "kb",
                                                             "strategy": "two_stage", "coarse_dim": 50}), 400)
        assert "32, 16" in message
    _error(client.get("/api/v1/search", params={"q": "wing", "collection": "kb", "strategy": "magic"}), 400)
    _error(client.get("/api/v1/search", params={"q": "wing", "collection": "nope"}), 404, "collection_not_found")
    _error(client.get("/api/v1/search", params={"q": "", "collection": "kb"}), 400)


def _check_fusion_settings(client: TestClient) -> None:
    """hybrid over HTTP: weights and fusion from the request, else the collection's saved settings (eval --tune)."""
    body = {"q": "laminar wing flow", "collection": "kb", "k": 3}
    posted = client.post("/api/v1/search", json={**body, "fusion": "minmax", "weights": {"dense": 0.9, "sparse": 0.1}})
    assert posted.json()["fusion"] == "minmax" and posted.json()["weights"] == {"dense": 0.9, "sparse": 0.1}
    store = client.app.state.service.store  # type: ignore[attr-defined]
    save_fusion(store, store.active_set("kb"), FusionSettings("rrf", {"dense": 0.25, "sparse": 0.75}, 3))
    tuned = client.post("/api/v1/search", json=body).json()
    assert tuned["tuned"] == {"fusion": "rrf", "weights": {"dense": 0.25, "sparse": 0.75}, "rrf_k": 3}
    assert (tuned["fusion"], tuned["rrf_k"], tuned["weights"]) == ("rrf", 3, {"dense": 0.25, "sparse": 0.75})
    explicit = client.get("/api/v1/search", params={**body, "rrf_k": 3, "fusion": "rrf"}).json()
    assert [h["score"] for h in explicit["hits"]] == [h["score"] for h in tuned["hits"]]
    assert client.get("/api/v1/search", params={**body, "rrf_k": 50}).json()["rrf_k"] == 50
    _error(client.post("/api/v1/search", json={**body, "fusion": "magic"}), 400)


def test_search_returns_documents_unless_asked_for_chunks(client: TestClient) -> None:
    _collection(client, chunk_tokens=8)  # short chunks: every document below splits into several
    docs = [{"id": f"doc{i}", "text": " ".join(f"wing flow part {j} of {i} with some filler words"
                                               for j in range(6))} for i in range(5)]
    assert client.post("/api/v1/collections/kb/documents", json={"documents": docs}).json()["chunks"] > 15
    query = {"q": "wing flow", "collection": "kb", "strategy": "bm25", "k": 3}
    posted = client.post("/api/v1/search", json=query).json()
    fetched = client.get("/api/v1/search", params=query).json()
    for result in (posted, fetched):
        assert result["group_by"] == "document" and result["k"] == 3
        assert len({h["document_id"] for h in result["hits"]}) == len(result["hits"]) == 3
        ranked = client.post("/api/v1/search", json={**query, "k": result["chunks_ranked"],
                                                     "group_by": "chunk"}).json()["hits"]
        for hit in result["hits"]:
            text = docs[int(hit["document_id"][3:])]["text"]
            others = [h for h in ranked if h["document_id"] == hit["document_id"] and h["chunk_id"] != hit["chunk_id"]]
            assert [(c["chunk_id"], c["ordinal"], c["start"], c["end"], c["score"]) for c in hit["other_chunks"]] == [
                (h["chunk_id"], h["ordinal"], h["start"], h["end"], h["score"]) for h in others]
            for located in (hit, *others):  # the offsets locate each chunk in its document
                assert text[located["start"]: located["end"]].split() == located["text"].split()
    assert any(hit["other_chunks"] for hit in posted["hits"])
    assert [h["chunk_id"] for h in posted["hits"]] == [h["chunk_id"] for h in fetched["hits"]]
    chunks = client.post("/api/v1/search", json={**query, "k": 12, "group_by": "chunk"}).json()
    also = client.get("/api/v1/search", params={**query, "k": 12, "group_by": "chunk"}).json()
    assert chunks["group_by"] == "chunk" and len(chunks["hits"]) == 12 and chunks["hits"] == also["hits"]
    assert len({h["document_id"] for h in chunks["hits"]}) <= 5 and "other_chunks" not in chunks["hits"][0]
    everything = client.post("/api/v1/search", json={**query, "k": 12}).json()  # 12 documents wanted, 5 exist
    assert sorted(h["document_id"] for h in everything["hits"]) == [f"doc{i}" for i in range(5)]
    _error(client.post("/api/v1/search", json={**query, "group_by": "page"}), 400)
    _error(client.get("/api/v1/search", params={**query, "group_by": "page"}), 400)


def test_document_crud_and_bad_documents_write_nothing(client: TestClient) -> None:
    _collection(client)
    client.post("/api/v1/collections/kb/documents", json={"documents": DOCS})
    listed = client.get("/api/v1/collections/kb/documents", params={"limit": 2}).json()
    assert listed["total"] == 3 and [d["id"] for d in listed["documents"]] == ["wing", "heat"]
    assert client.get("/api/v1/collections/kb/documents/flug").json()["metadata"] == {"lang": "de"}
    again = client.post("/api/v1/collections/kb/documents", json={"documents": DOCS}).json()
    assert again["unchanged"] == 3 and again["added"] == again["updated"] == 0
    updated = client.put("/api/v1/collections/kb/documents/heat", json={"text": "shock waves in supersonic flow"})
    assert updated.json()["updated"] == 1
    hits = client.get("/api/v1/search", params={"q": "supersonic shock", "collection": "kb", "strategy": "bm25"})
    assert hits.json()["hits"][0]["document_id"] == "heat"
    for bad in ({"id": "x", "text": "nul \x00 byte"}, {"id": "x", "text": "   "}, {"id": " x", "text": "ok"},
                {"id": "x", "text": "lone \ud800 surrogate"}):
        payload = json.dumps({"documents": [DOCS[0], bad]})  # ASCII-escaped: a lone surrogate travels as \ud800
        _error(client.post("/api/v1/collections/kb/documents", content=payload,
                           headers={"content-type": "application/json"}), 400)
    _error(client.post("/api/v1/collections/kb/documents", json={"documents": [DOCS[0], DOCS[0]]}), 400)
    _error(client.post("/api/v1/collections/kb/documents", json={"documents": []}), 400)
    _error(client.post("/api/v1/collections/none/documents", json={"documents": DOCS}), 404)
    assert client.get("/api/v1/collections/kb").json()["documents"] == 3  # nothing half-written
    assert client.delete("/api/v1/collections/kb/documents/wing").status_code == 204
    _error(client.delete("/api/v1/collections/kb/documents/wing"), 404)
    _error(client.get("/api/v1/collections/kb/documents/wing"), 404)
    assert client.delete("/api/v1/collections/kb").status_code == 204
    assert client.get("/api/v1/collections").json() == []


def test_auto_embed_rules_off_leaves_vectors_pending_until_embedded(client: TestClient) -> None:
    made = _collection(client, auto_embed_rules={"on_create": False, "on_update": True})
    written = client.post("/api/v1/collections/kb/documents", json={"documents": DOCS}).json()
    assert written["embedded"] is False and written["pending"] == 3
    assert client.get("/api/v1/search", params={"q": "wing", "collection": "kb", "strategy": "dense"}).json()[
        "hits"] == []
    assert client.get("/api/v1/search", params={"q": "wing", "collection": "kb", "strategy": "bm25"}).json()[
        "hits"]  # text search does not need vectors
    assert client.post(f"/api/v1/embedding-sets/{made['id']}/embed").status_code == 202
    done = _wait_for(client, made["id"])
    assert done["vectors"] == 3 and done["job"]["embedded"] == 3
    hits = client.get("/api/v1/search", params={"q": "laminar wing flow", "collection": "kb",
                                                "strategy": "dense"}).json()
    assert hits["hits"][0]["document_id"] == "wing"


def test_a_new_set_for_an_existing_collection_is_filled_in_the_background(client: TestClient) -> None:
    _collection(client)
    client.post("/api/v1/collections/kb/documents", json={"documents": DOCS})
    _error(client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "fake",
                                                       "truncate_dim": 50}), 400, "invalid_dimensions")
    client.put("/api/v1/embedding-configs/fake-mrl", json={"id": "fake-mrl", "model": "hash", "supports_mrl": False})
    second = client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "fake-mrl",
                                                         "name": "same model, other name"})
    _error(second, 409, "store_conflict")  # same fingerprint as the active set: nothing to build
    _error(client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "nope"}), 404)
    _error(client.delete("/api/v1/embedding-configs/fake"), 409)  # in use


def test_mrl_set_switches_the_collection_after_background_fill(make_client: Callable[..., TestClient]) -> None:
    client = make_client()
    nomic = {"id": "m", "model": "nomic-embed-text-v1.5", "default_truncate_dim": 256}
    assert client.post("/api/v1/embedding-configs", json=nomic).status_code == 201
    made = client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "m",
                                                       "truncate_dim": 768})
    assert made.status_code == 201 and made.json()["truncate_dim"] is None  # the full size is no truncation
    client.post("/api/v1/collections/kb/documents", json={"documents": DOCS})
    switched = client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "m"})
    assert switched.status_code == 202 and switched.json()["status"] == "building"
    assert switched.json()["truncate_dim"] == 256 and switched.json()["dim"] == 256
    done = _wait_for(client, switched.json()["id"])
    assert done["status"] == "active" and done["vectors"] == 3 and done["progress"] == 1.0
    assert client.get(f"/api/v1/embedding-sets/{made.json()['id']}").json()["status"] == "retired"
    collection = client.get("/api/v1/collections/kb").json()
    assert collection["fingerprint"] == done["fingerprint"]
    hits = client.get("/api/v1/search", params={"q": "boundary layer heat", "collection": "kb",
                                                "strategy": "dense"}).json()
    assert hits["hits"][0]["document_id"] == "heat"
    sets = client.get("/api/v1/embedding-sets", params={"collection": "kb"}).json()
    assert [s["status"] for s in sets] == ["retired", "active"]


@pytest.mark.parametrize("path", ["/api/v1/embedding-sets/999", "/api/v1/collections/none",
                                  "/api/v1/collections/none/documents"])
def test_unknown_resources_are_404(client: TestClient, path: str) -> None:
    _error(client.get(path), 404)


def test_a_search_request_is_validated_once(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The route validates the request before the query is embedded, and the search does not validate it again."""
    from m3search.retrieval.types import SearchRequest

    _collection(client)
    client.post("/api/v1/collections/kb/documents", json={"documents": DOCS})
    checks: list[SearchRequest] = []
    original = SearchRequest.checked

    def counted(self: SearchRequest) -> object:
        checks.append(self)
        return original(self)

    monkeypatch.setattr(SearchRequest, "checked", counted)
    found = client.post("/api/v1/search", json={"q": "wing", "collection": "kb", "strategy": "dense", "k": 3})
    assert found.status_code == 200 and len(checks) == 1
