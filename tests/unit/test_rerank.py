"""The rerank stage: ordering, breakdowns, validation, the shared pool and LLM reranking that fails open."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from m3search.errors import ConfigError, FidelityError, InputError, LLMError
from m3search.ingest.pipeline import index_documents
from m3search.llm import ChatEndpoint
from m3search.models.encoders.loader import load_encoder
from m3search.models.rerank import fidelity as rerank_fidelity
from m3search.models.rerank.registry import get_reranker, list_rerankers
from m3search.retrieval.rerank import LLMReranker, RerankerPool, parse_order
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest, SearchResult
from m3search.settings import Settings, get_settings
from m3search.store.base import Store
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Chunk, Document, EmbeddingConfig, PreparedDocument
from m3search.store.urls import open_store
from m3search.types import Embedding, SparseVector
from tests.cli import run_cli as _run
from tests.fake_llm import fake_llm
from tests.http import DOCS
from tests.references import import_or_skip

CONFIG = EmbeddingConfig("synthetic", "0" * 40, 16, None, ("dense", "sparse"), "fp32")
WORDS = ["wing", "flow", "heat", "plate", "shock", "wave", "boundary", "layer", "jet", "nozzle"]
QUERY = "heat shock"


class FakeScorer:
    """Deterministic cross-encoder stand-in: query-word overlap, then a stable hash of the text."""

    name = "ms-marco-minilm-l-6-v2"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        self.calls.append((query, list(passages)))
        words = set(query.split())
        return [sum(w in words for w in p.split()) + (sum(map(ord, p)) % 97) / 100 for p in passages]


def _embedding(rng: np.random.Generator) -> Embedding:
    dense = rng.standard_normal(16).astype(np.float32)
    tokens = np.sort(rng.choice(50, size=int(rng.integers(1, 8)), replace=False)).astype(np.int64)
    return Embedding(8, False, dense / np.linalg.norm(dense),
                     SparseVector(tokens, rng.uniform(0.05, 1.0, len(tokens)).astype(np.float32)))


@pytest.fixture(params=["sqlite", "edge"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "edge":
        import_or_skip("qdrant_edge", "qdrant-edge-py is in the dev extra")
    url = {"sqlite": f"sqlite:///{tmp_path}/index.sqlite3", "edge": f"qdrant+edge:///{tmp_path}/edge"}
    with open_store(url[str(request.param)], exact=True) as opened:  # type: ignore[attr-defined]
        rng = np.random.default_rng(0)
        target = opened.create_collection("kb", CONFIG, 64, 0)
        docs = []
        for i in range(40):
            text = " ".join(rng.choice(WORDS, 6))
            docs.append(PreparedDocument(Document(f"d{i}", text, "test"), [Chunk(0, text, 0, len(text), 8)],
                                         [_embedding(rng)]))
        opened.write_documents(target, docs)
        yield opened


def _pool(scorer: FakeScorer | None = None, **overrides: object) -> RerankerPool:
    chosen = scorer or FakeScorer()
    return RerankerPool(get_settings(**overrides), loader=lambda name, settings: chosen, cache={})


def _search(store: Store, pool: RerankerPool, **request: object) -> SearchResult:
    query = _embedding(np.random.default_rng(1))
    return Searcher(store, rerankers=pool).search_embedded("kb", QUERY, query, SearchRequest("dense", **request))


@pytest.mark.parametrize("strategy", ["dense", "hybrid"])
def test_cross_encoder_reorders_the_first_stage_candidates(store: Store, strategy: str) -> None:
    scorer = FakeScorer()
    query = _embedding(np.random.default_rng(1))
    searcher = Searcher(store, rerankers=_pool(scorer))
    first = searcher.search_embedded("kb", QUERY, query, SearchRequest(strategy, k=20))  # type: ignore[arg-type]
    result = searcher.search_embedded("kb", QUERY, query, SearchRequest(
        strategy, k=5, rerank="ms-marco-minilm-l-6-v2", rerank_k=20))  # type: ignore[arg-type]
    assert scorer.calls == [(QUERY, [h.text for h in first.hits])]  # exactly the 20 candidates, in order
    expected = scorer.score(QUERY, [h.text for h in first.hits])
    order = sorted(range(20), key=lambda i: (-expected[i], i))[:5]
    assert [(h.document_id, h.score) for h in result.hits] == [(first.hits[i].document_id, expected[i])
                                                                for i in order]
    for rank, (hit, index) in enumerate(zip(result.hits, order, strict=True), start=1):
        assert hit.breakdown["first_stage"].rank == index + 1
        assert hit.breakdown["first_stage"].score == pytest.approx(first.hits[index].score)
        assert (hit.breakdown["rerank"].rank, hit.breakdown["rerank"].score) == (rank, expected[index])
        for name, part in first.hits[index].breakdown.items():  # the retrievers' own contributions are kept
            assert hit.breakdown[name] == part
        assert hit.rerank is not None and (hit.rerank.by, hit.rerank.status) == ("ms-marco-minilm-l-6-v2", "ok")
    data = json.loads(json.dumps(result.as_dict()))
    assert data["k"] == 5 and data["rerank"] == {"by": "ms-marco-minilm-l-6-v2", "status": "ok", "rerank_k": 20,
                                                 "candidates": 20}
    assert data["hits"][0]["breakdown"]["rerank"] == {"rank": 1, "score": expected[order[0]],
                                                      "by": "ms-marco-minilm-l-6-v2", "status": "ok",
                                                      "reason": None}


@pytest.mark.parametrize(("request_args", "message"), [
    ({"rerank": "no-such-model"}, "unknown reranker 'no-such-model'"),
    ({"rerank": "llm", "k": 20, "rerank_k": 10}, "rerank_k (10) must be at least k (20)"),
    ({"rerank_k": 0}, "rerank_k must be an integer from 1 to 1000"),
    ({"rerank_k": 1001, "rerank": "bge-reranker-v2-m3"}, "rerank_k must be an integer from 1 to 1000"),
])
def test_bad_rerank_requests_are_refused(request_args: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchRequest(**request_args).checked()  # type: ignore[arg-type]


def test_registry_names_and_repository_ids() -> None:
    names = [s.name for s in list_rerankers()]
    assert names == ["bge-reranker-v2-m3", "ms-marco-minilm-l-6-v2"]
    assert get_reranker("cross-encoder/ms-marco-MiniLM-L-6-v2").name == "ms-marco-minilm-l-6-v2"
    assert get_reranker("BAAI/bge-reranker-v2-m3").weights.revision == get_reranker("bge-reranker-v2-m3").revision
    for spec in list_rerankers():
        assert len(spec.revision) == 40 and spec.architecture.endswith("ForSequenceClassification")


def test_pool_loads_each_cross_encoder_once() -> None:
    loads: list[str] = []

    def loader(name: str, settings: Settings) -> FakeScorer:
        loads.append(name)
        return FakeScorer()

    pool = RerankerPool(get_settings(), loader=loader, cache={})
    assert pool.scorer("ms-marco-minilm-l-6-v2") is pool.scorer("cross-encoder/ms-marco-MiniLM-L6-v2")
    assert loads == ["ms-marco-minilm-l-6-v2"]


def test_rerank_of_a_store_without_candidates_returns_nothing(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/empty.sqlite3") as opened:  # type: ignore[attr-defined]
        opened.create_collection("kb", CONFIG, 64, 0)
        result = _search(opened, _pool(), rerank="ms-marco-minilm-l-6-v2")
    assert result.hits == [] and result.details["rerank"]["candidates"] == 0


# --- LLM reranking ------------------------------------------------------------------------------------------------

def test_llm_rerank_follows_the_endpoints_order(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/i.sqlite3") as opened:  # type: ignore[attr-defined]
        _fill_small(opened)
        first = _search(opened, _pool(), k=4)
        with fake_llm(lambda messages: "Ranking: [3, 1, 4, 2]") as llm:
            pool = _pool(llm_url=llm.url, llm_model="tiny-chat", llm_api_key="sk-secret")
            result = _search(opened, pool, k=3, rerank="llm", rerank_k=4)
        prompt = llm.requests[0]["body"]["messages"][-1]["content"]
    assert [h.document_id for h in result.hits] == [first.hits[i].document_id for i in (2, 0, 3)]
    assert [h.score for h in result.hits] == [1.0, 0.75, 0.5]
    assert QUERY in prompt and all(f"[{i}] {first.hits[i - 1].text}" in prompt for i in range(1, 5))
    assert llm.requests[0]["body"]["model"] == "tiny-chat"
    assert llm.requests[0]["authorization"] == "Bearer sk-secret"
    assert result.details["rerank"] == {"by": "llm", "status": "ok", "rerank_k": 4, "candidates": 4,
                                        "llm_model": "tiny-chat"}
    assert [h.breakdown["first_stage"].rank for h in result.hits] == [3, 1, 4]


def _fill_small(store: Store) -> None:
    target = store.create_collection("kb", CONFIG, 64, 0)
    rng = np.random.default_rng(3)
    texts = ["heat shock on a plate", "wing flow", "jet nozzle heat", "boundary layer wave", "shock wave"]
    store.write_documents(target, [
        PreparedDocument(Document(f"d{i}", t, "test"), [Chunk(0, t, 0, len(t), 4)], [_embedding(rng)])
        for i, t in enumerate(texts)])


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("mode", "reason"), [
    ("timeout", "did not answer within 0.3 s"),
    ("http", "answered HTTP 500"),
    ("unreachable", "is unreachable"),
    ("unparseable", "not a JSON array of passage numbers"),
    ("out-of-range", "not a JSON array of passage numbers"),
])
def test_llm_failures_fail_open_and_say_why(tmp_path: Path, mode: str, reason: str) -> None:
    replies = {"unparseable": "The first passage is the best one.", "out-of-range": "[9, 0, 17]"}
    with open_store(f"sqlite:///{tmp_path}/i.sqlite3") as opened:  # type: ignore[attr-defined]
        _fill_small(opened)
        first = _search(opened, _pool(), k=3)
        with fake_llm(lambda messages: replies.get(mode, "[2, 1]"), delay=1.0 if mode == "timeout" else 0.0,
                      status=500 if mode == "http" else 200) as llm:
            url = f"http://127.0.0.1:{_closed_port()}/v1" if mode == "unreachable" else llm.url
            pool = _pool(llm_url=url, llm_model="tiny-chat", llm_timeout=0.3)
            result = _search(opened, pool, k=3, rerank="llm", rerank_k=5)
    assert [(h.document_id, h.score) for h in result.hits] == [(h.document_id, h.score) for h in first.hits]
    assert result.details["rerank"]["status"] == "failed-open" and reason in result.details["rerank"]["reason"]
    for rank, hit in enumerate(result.as_dict()["hits"], start=1):
        note = hit["breakdown"]["rerank"]
        assert (note["by"], note["status"], note["rank"], note["score"]) == ("llm", "failed-open", None, None)
        assert reason in note["reason"] and hit["breakdown"]["first_stage"]["rank"] == rank


def test_llm_partial_answers_keep_the_rest_in_first_stage_order() -> None:
    endpoint = ChatEndpoint("http://127.0.0.1:1/v1", "m")
    assert parse_order("```json\n[4, \"2\", 4, 99]\n```", 5) == [3, 1]
    assert parse_order("not [this] but [2, 1.0]", 3) == [1, 0]
    with pytest.raises(LLMError):
        parse_order("[]", 3)
    with fake_llm(lambda messages: "[4]") as llm:
        ranker = LLMReranker(ChatEndpoint(llm.url, "m"))
        assert ranker.order(QUERY, ["a", "b", "c", "d"]) == [3, 0, 1, 2]
    assert "sk" not in repr(endpoint)


def test_llm_rerank_without_an_endpoint_is_a_config_error(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path}/i.sqlite3") as opened:  # type: ignore[attr-defined]
        _fill_small(opened)
        with pytest.raises(ConfigError, match="M3SEARCH_LLM_URL"):
            _search(opened, _pool(), rerank="llm")


# --- CLI ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def hash_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in {"a.txt": "heat shock on a flat plate", "b.txt": "wing flow over a wing",
                       "c.txt": "shock wave heat"}.items():
        (folder / name).write_text(text, encoding="utf-8")
    db = str(tmp_path / "i.sqlite3")
    assert _run(["index", str(folder), "-c", "kb", "-m", "hash", "--db", db], capsys)[0] == 0
    return db


@pytest.mark.parametrize(("args", "message"), [
    (["--rerank", "nope"], "unknown reranker 'nope'"),
    (["--rerank", "ms-marco-minilm-l-6-v2", "--k", "5", "--rerank-k", "3"], "must be at least k"),
    (["--rerank", "llm"], "M3SEARCH_LLM_URL"),
    (["--rerank", "ms-marco-minilm-l-6-v2"], "models pull ms-marco-minilm-l-6-v2"),
])
def test_cli_rerank_errors_are_one_line(hash_db: str, capsys: pytest.CaptureFixture[str], args: list[str],
                                        message: str) -> None:
    code, _, err = _run(["search", "heat", "-c", "kb", "--db", hash_db, *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_llm_rerank_json(hash_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["search", "heat", "-c", "kb", "--db", hash_db, "-s", "bm25", "--json"], capsys)
    first = [h["document_id"] for h in json.loads(out)["hits"]]
    with fake_llm(lambda messages: "[2, 1]") as llm:
        code, out, _ = _run(["search", "heat", "-c", "kb", "--db", hash_db, "-s", "bm25", "--json", "--k", "2",
                             "--rerank", "llm", "--llm-url", llm.url, "--llm-model", "tiny-chat"], capsys)
    result = json.loads(out)
    assert code == 0 and result["rerank"]["status"] == "ok" and len(first) == 2
    assert [h["document_id"] for h in result["hits"]] == [first[1], first[0]]


def test_cli_models_add_and_list_rerankers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text("{}")
    code, _, err = _run(["models", "add", "ms-marco-minilm-l-6-v2", str(tmp_path / "partial")], capsys)
    assert code == 2 and "lacks tokenizer.json" in err and len(err.strip().splitlines()) == 1
    code, out, _ = _run(["models", "list", "--rerankers", "--json"], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and set(rows) == {"bge-reranker-v2-m3", "ms-marco-minilm-l-6-v2"}
    assert not any(row["available"] for row in rows.values())
    assert rows["ms-marco-minilm-l-6-v2"]["revision"] == "c5ee24cb16019beea0893ab7796b1df96625c6b8"
    code, _, err = _run(["models", "prepare", "bge-reranker-v2-m3"], capsys)
    assert code == 2 and "models pull bge-reranker-v2-m3" in err


def test_fidelity_figures_and_threshold() -> None:
    def logits(session: object, query: str, passages: Sequence[str]) -> np.ndarray:
        base = np.array([float(len(p) % 13) + len(query) / 100 for p in passages], dtype=np.float32)
        return base if session == "fp32" else -base  # "int8" reverses every ranking

    same = rerank_fidelity.measure(logits, "fp32", "fp32")
    assert same == {"rank_spearman_mean": 1.0, "rank_spearman_min": 1.0, "top1_agreement": 1.0,
                    "max_abs_logit_error": 0.0}
    reversed_ = rerank_fidelity.measure(logits, "fp32", "int8")
    assert reversed_["rank_spearman_mean"] < 0 and reversed_["top1_agreement"] < 1.0
    rerank_fidelity.check(same, "m", 0.99, False)
    rerank_fidelity.check(reversed_, "m", 0.99, True)  # forced: used anyway
    with pytest.raises(FidelityError, match="rank_spearman_mean"):
        rerank_fidelity.check(reversed_, "m", 0.99, False)
    assert len(rerank_fidelity.sample()) == rerank_fidelity.QUERIES


# --- HTTP ---------------------------------------------------------------------------------------------------------

def test_server_llm_rerank_and_fail_open(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "db.sqlite3") as opened:  # the database make_client's app serves
        index_documents(opened, load_encoder("hash"), "kb", [Document(d["id"], d["text"], "test") for d in DOCS])
    body = {"q": "wing flow heat", "collection": "kb", "strategy": "bm25", "k": 2, "rerank": "llm", "rerank_k": 3}
    with fake_llm(lambda messages: "[2, 1]") as llm:
        client = make_client(llm_url=llm.url, llm_model="tiny-chat")
        first = client.post("/api/v1/search", json={**body, "rerank": None}).json()["hits"]
        ranked = client.post("/api/v1/search", json=body)
        llm.status = 500
        failed = client.get("/api/v1/search", params=body)
    assert ranked.status_code == failed.status_code == 200
    assert [h["document_id"] for h in ranked.json()["hits"]] == [first[1]["document_id"], first[0]["document_id"]]
    assert ranked.json()["rerank"]["status"] == "ok"
    assert failed.json()["rerank"]["status"] == "failed-open" and "HTTP 500" in failed.json()["rerank"]["reason"]
    assert [h["document_id"] for h in failed.json()["hits"]] == [h["document_id"] for h in first]
    assert all(h["breakdown"]["rerank"]["status"] == "failed-open" for h in failed.json()["hits"])
    bad = client.post("/api/v1/search", json={**body, "rerank_k": 1001})
    assert bad.status_code == 400 and "rerank_k" in bad.json()["error"]["message"]
