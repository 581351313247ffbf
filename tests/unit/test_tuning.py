"""hybrid's fusion settings: request > the collection's saved settings (eval --tune) > the built-in default; the
tuner's offline fusion equals the searches that follow; cross-validation; the eval --tune CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import InputError
from m3search.models.encoders.loader import load_encoder
from m3search.models.registry import get_spec
from m3search.retrieval.beir import load_dataset
from m3search.retrieval.defaults import save_fusion, saved_fusion, settings_from
from m3search.retrieval.evaluation import RECALL_DEPTH, document_run, evaluate_run, indexed
from m3search.retrieval.fusion import DEFAULT_RRF_K, FusionSettings, default_fusion
from m3search.retrieval.search import Searcher
from m3search.retrieval.tuning import Candidates, collect, folds_of, grid, tune
from m3search.retrieval.types import SearchRequest
from m3search.store.sqlite import SQLiteStore
from tests.cli import run_cli
from tests.unit.test_retrieval import _fill, _query

WORDS = ["wing", "flow", "heat", "plate", "shock", "wave", "boundary", "layer", "jet", "nozzle", "lift", "drag",
         "mach", "vortex", "sweep", "panel"]


def _beir(folder: Path, n_docs: int = 40, n_queries: int = 20, seed: int = 3) -> Path:
    """A synthetic BEIR set: random word documents; each query is a few words of its relevant document, plus a
    noise word (so bm25 and the hash model's dense vectors disagree now and then)."""
    rng = np.random.default_rng(seed)
    docs = {f"d{i}": " ".join(rng.choice(WORDS, 8)) for i in range(n_docs)}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in docs.items()))
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for q in range(n_queries):
        target = f"d{rng.integers(n_docs)}"
        words = [*rng.choice(docs[target].split(), 3), str(rng.choice(WORDS))]
        queries.append(json.dumps({"_id": f"q{q}", "text": " ".join(words)}))
        qrels.append(f"q{q}\t{target}\t1")
    (folder / "queries.jsonl").write_text("\n".join(queries) + "\n")
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return folder


def test_request_overrides_saved_settings_which_override_the_default(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "i.sqlite3") as store:
        _fill(store, 60)
        searcher = Searcher(store)
        target = store.active_set("kb")

        def hits(request: SearchRequest) -> list[tuple[int, float]]:
            return [(h.chunk_id, h.score) for h in searcher.search_embedded("kb", "", _query(7), request).hits]

        builtin = default_fusion(("dense", "sparse"))
        default = searcher.search_embedded("kb", "", _query(7), SearchRequest("hybrid"))
        assert default.details["fusion"] == builtin.method == "max" and "tuned" not in default.details
        assert default.details["weights"] == {"dense": 0.7, "sparse": 0.3}
        assert hits(SearchRequest("hybrid")) == hits(SearchRequest(
            "hybrid", fusion=builtin.method, weights=builtin.weights, rrf_k=builtin.rrf_k))
        tuned = FusionSettings("rrf", {"dense": 0.1, "sparse": 0.9}, 5)
        save_fusion(store, target, tuned)
        assert saved_fusion(store, target) == tuned and store.set_options(target.id)["fusion"] == tuned.as_dict()
        result = searcher.search_embedded("kb", "", _query(7), SearchRequest("hybrid"))
        explicit = SearchRequest("hybrid", fusion="rrf", weights={"dense": 0.1, "sparse": 0.9}, rrf_k=5)
        assert [(h.chunk_id, h.score) for h in result.hits] == hits(explicit)
        assert result.details["tuned"] == tuned.as_dict() and result.details["weights"] == {"dense": 0.1, "sparse": 0.9}
        assert hits(SearchRequest("hybrid")) != hits(SearchRequest(
            "hybrid", fusion=builtin.method, weights=builtin.weights, rrf_k=builtin.rrf_k))
        mixed = searcher.search_embedded("kb", "", _query(7), SearchRequest("hybrid", rrf_k=40))  # one field given
        assert mixed.details["rrf_k"] == 40 and mixed.details["weights"] == {"dense": 0.1, "sparse": 0.9}
        other = searcher.search_embedded("kb", "", _query(7), SearchRequest("weighted"))  # only hybrid is tuned
        assert "tuned" not in other.details


def test_hybrid_weights_that_leave_out_both_retrievers_are_refused(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "i.sqlite3") as store:
        _fill(store, 10)
        with pytest.raises(InputError, match="not all zero"):
            Searcher(store).search_embedded("kb", "", _query(7), SearchRequest("hybrid", weights={"colbert": 1.0}))
        with pytest.raises(InputError, match="fusion must be one of max, rrf, dbsf, minmax"):
            SearchRequest("hybrid", fusion="magic").checked()  # type: ignore[arg-type]


def test_saved_settings_are_checked() -> None:
    with pytest.raises(InputError, match="not fusion/weights/rrf_k"):
        settings_from({"fusion": "magic", "weights": {"dense": 1.0}})
    assert settings_from({"fusion": "minmax", "weights": {"dense": 1}}).rrf_k == DEFAULT_RRF_K


@pytest.mark.parametrize("settings", [
    FusionSettings("rrf", {"dense": 0.3, "bm25": 0.7}, 10), FusionSettings("dbsf", {"dense": 0.6, "bm25": 0.4}),
    FusionSettings("minmax", {"dense": 0.8, "bm25": 0.2}), default_fusion(("dense", "bm25")),
])
def test_the_tuners_offline_fusion_equals_the_search(tmp_path: Path, settings: FusionSettings) -> None:
    dataset = load_dataset(_beir(tmp_path / "ds"))
    encoder = load_encoder("hash")
    with indexed(dataset, encoder, tmp_path / "i.sqlite3", "kb") as (store, name, _):
        searcher = Searcher(store, encoder)
        embeddings = searcher.encode_queries(name, list(dataset.queries.values()), ["hybrid"])
        candidates = collect(searcher, name, dataset, embeddings, ("dense", "bm25"), 10)
        request = SearchRequest(fusion=settings.method, weights=settings.weights, rrf_k=settings.rrf_k)
        searched = document_run(searcher, name, dataset, "hybrid", RECALL_DEPTH, embeddings, request)
    offline = candidates.run(settings)
    assert offline == searched and any(offline.values())


def test_folds_cover_every_query_once() -> None:
    queries = [f"q{i}" for i in range(23)]
    folds = folds_of(queries, 5, seed=1)
    assert sorted(q for f in folds for q in f) == sorted(queries) and {len(f) for f in folds} == {4, 5}
    assert folds == folds_of(queries, 5, seed=1) and folds != folds_of(queries, 5, seed=2)
    with pytest.raises(InputError, match="--folds"):
        folds_of(queries, 24)


def test_cross_validation_scores_each_query_with_a_setting_chosen_without_it() -> None:
    """Two queries whose relevant documents only one retriever finds each: every setting that is perfect for one
    fails the other, so in-sample tuning looks better than any choice made on the other fold."""
    parts = {"qa": {"dense": [(1, 0.9), (2, 0.1)], "bm25": [(2, 9.0), (1, 1.0)]},
             "qb": {"dense": [(3, 0.9), (4, 0.1)], "bm25": [(4, 9.0), (3, 1.0)]}}
    documents = {1: "a1", 2: "a2", 3: "b2", 4: "b1"}  # ties: trec_eval ranks the larger id (the wrong one) first
    qrels = {"qa": {"a1": 1}, "qb": {"b1": 1}}
    candidates = Candidates(("dense", "bm25"), parts, documents, 100)  # type: ignore[arg-type]
    report = tune(candidates, qrels, FusionSettings("rrf", {"dense": 0.5, "bm25": 0.5}), k=1, folds=2)
    assert report.chosen.metrics["ndcg@1"] == 0.5 and report.cv_ndcg < report.chosen.metrics["ndcg@1"]
    assert report.singles["dense"].metrics["ndcg@1"] == 0.5 and report.tried == len(grid(("dense", "bm25")))
    assert not report.better or report.cv_ndcg > report.before.metrics["ndcg@1"]


def test_eval_tune_cli_saves_a_better_setting_and_search_uses_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = _beir(tmp_path / "ds")
    db = tmp_path / "i.sqlite3"
    code, out, _ = run_cli(["eval", str(folder), "-m", "hash", "--tune", "--db", str(db), "-c", "kb", "--json"],
                           capsys)
    assert code == 0
    report = json.loads(out)
    assert report["folds"] == 5 and report["queries"] == 20 and set(report["singles"]) == {"dense", "bm25"}
    assert report["saved"] == (report["chosen_cv_ndcg@10"] > report["before"]["ndcg@10"])
    assert report["saved"]  # on this seeded set the tuned CV estimate beats the built-in default (0.686 vs 0.663)
    with SQLiteStore(db) as store:
        saved = saved_fusion(store, store.active_set("kb"))
    assert (saved is not None) == report["saved"]
    code, out, _ = run_cli(["search", "wing flow", "-c", "kb", "--db", str(db), "--json"], capsys)
    found = json.loads(out)
    assert code == 0 and (found.get("tuned") == report["chosen"]) == report["saved"]
    code, out, _ = run_cli(["search", "wing flow", "-c", "kb", "--db", str(db)], capsys)
    assert code == 0 and f"hybrid ({found['fusion']}: " in out and ("; tuned)" in out) == report["saved"]
    code, out, _ = run_cli(["eval", str(folder), "-m", "hash", "--tune", "--folds", "3"], capsys)  # table, temporary
    assert code == 0 and "3-fold CV estimate" in out and "dense alone" in out and "before" in out
    assert "not saved" in out
    code, _, err = run_cli(["eval", str(folder), "-m", "hash", "--tune", "--folds", "21"], capsys)
    assert code == 2 and "--folds must be from 2 to the number of judged queries (20)" in err


def test_the_choice_is_the_grid_best_and_no_worse_than_each_retriever_in_sample(tmp_path: Path) -> None:
    dataset = load_dataset(_beir(tmp_path / "ds"))
    encoder = load_encoder("hash")
    assert get_spec("hash").outputs == ("dense",)
    with indexed(dataset, encoder, None, None) as (store, name, _):
        searcher = Searcher(store, encoder)
        embeddings = searcher.encode_queries(name, list(dataset.queries.values()), ["hybrid"])
        candidates = collect(searcher, name, dataset, embeddings, ("dense", "bm25"), 10)
    report = tune(candidates, dataset.qrels, FusionSettings("rrf", {"dense": 1.0, "bm25": 1.0}), k=10, folds=4)
    best = max(s.metrics["ndcg@10"] for s in report.scored)
    assert report.chosen.metrics["ndcg@10"] == best
    assert best >= max(s.metrics["ndcg@10"] for s in report.singles.values())
    assert report.cv_ndcg <= best
    assert evaluate_run(candidates.run(report.chosen.settings), dataset.qrels)[0]["ndcg@10"] == best


def test_the_built_in_defaults_per_pair_of_retrievers() -> None:
    assert default_fusion(("dense", "bm25")).weights == {"dense": 0.7, "bm25": 0.3}
    assert default_fusion(("sparse", "bm25")).weights == {"sparse": 0.3, "bm25": 0.7}
    assert default_fusion(("dense", "sparse")).method == "max"
    assert default_fusion(("dense", "colbert")).weights == {"dense": 1.0, "colbert": 1.0}  # not measured: equal
