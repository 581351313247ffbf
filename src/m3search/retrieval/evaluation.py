"""The evaluation harness: index a BEIR dataset, run strategies, score the runs with pytrec_eval.

Metrics: nDCG@k, MRR@k, Recall@100 and MAP, averaged over every judged query (a query with no result scores 0,
as ``trec_eval -c`` counts it). Runs rank documents: a document's score is its best chunk's.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from m3search._optional import require
from m3search.ingest.pipeline import index_documents
from m3search.models.encoders.base import Encoder
from m3search.retrieval.beir import Dataset, Qrels, Run
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.store.sqlite import SQLiteStore

RECALL_DEPTH = 100


def metric_names(k: int) -> tuple[str, ...]:
    return (f"ndcg@{k}", f"mrr@{k}", f"recall@{RECALL_DEPTH}", "map")


def _trec_order(scores: dict[str, float]) -> list[tuple[str, float]]:
    """trec_eval's order: score descending, ties by document id descending."""
    return sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)


def evaluate_run(run: Run, qrels: Qrels, k: int = 10) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean metrics and per-query metrics of ``run`` (pytrec_eval; the ``eval`` extra)."""
    pytrec_eval = require("pytrec_eval", "eval", "Scoring runs")
    measures = {f"ndcg_cut.{k}", f"recall.{RECALL_DEPTH}", "map"}
    run = {q: docs for q, docs in run.items() if docs}  # a query without results scores 0 below
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    top = {q: dict(_trec_order(docs)[:k]) for q, docs in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top)
    names = metric_names(k)
    per_query: dict[str, dict[str, float]] = {}
    for qid in qrels:
        found, first = full.get(qid, {}), mrr.get(qid, {})
        per_query[qid] = {names[0]: found.get(f"ndcg_cut_{k}", 0.0), names[1]: first.get("recip_rank", 0.0),
                          names[2]: found.get(f"recall_{RECALL_DEPTH}", 0.0), names[3]: found.get("map", 0.0)}
    means = {name: sum(q[name] for q in per_query.values()) / max(len(per_query), 1) for name in names}
    return means, per_query


@dataclass
class StrategyScore:
    """One strategy's metrics on a dataset, and its run."""

    strategy: str
    metrics: dict[str, float]
    run: Run = field(repr=False)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, **{m: round(v, 4) for m, v in self.metrics.items()},
                "search_seconds": round(self.seconds, 3)}


@dataclass
class EvalReport:
    """What ``m3search eval`` measured."""

    dataset: str
    model: str
    documents: int
    queries: int
    chunks: int
    k: int
    index_seconds: float
    encode_seconds: float
    scores: list[StrategyScore] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "documents": self.documents, "queries": self.queries,
                "chunks": self.chunks, "k": self.k, "index_seconds": round(self.index_seconds, 2),
                "query_encode_seconds": round(self.encode_seconds, 2),
                "strategies": [s.as_dict() for s in self.scores]}


def document_run(searcher: Searcher, collection: str, dataset: Dataset, strategy: str, depth: int,
                 embeddings: Sequence[Any], request: SearchRequest) -> Run:
    """The top ``depth`` documents per query: a ``group_by="document"`` search (a document scores its best chunk,
    :func:`~m3search.retrieval.grouping.group_hits`)."""
    ask = replace(request, strategy=strategy, k=depth, group_by="document")  # type: ignore[arg-type]
    return {qid: {hit.document_id: hit.score for hit in searcher.search_embedded(collection, text, embedding, ask).hits}
            for (qid, text), embedding in zip(dataset.queries.items(), embeddings, strict=True)}


@contextmanager
def indexed(dataset: Dataset, encoder: Encoder, db: Path | None, collection: str | None
            ) -> Iterator[tuple[SQLiteStore, str, float]]:
    """``dataset`` indexed into ``db`` (or a temporary store): the open store, the collection and the seconds taken
    (unchanged documents of an earlier run are not embedded again)."""
    with tempfile.TemporaryDirectory(prefix="m3search-eval-") as scratch:
        name = collection or f"eval-{dataset.name}"
        with SQLiteStore(db or Path(scratch) / "eval.sqlite3") as store:
            start = time.perf_counter()
            index_documents(store, encoder, name, dataset.corpus)
            yield store, name, time.perf_counter() - start


def evaluate(dataset: Dataset, encoder: Encoder, strategies: Sequence[str], *, k: int = 10,
             db: Path | None = None, collection: str | None = None, request: SearchRequest | None = None,
             progress: Callable[[str], None] | None = None) -> EvalReport:
    """Index ``dataset`` (into ``db``, or a temporary store), run each strategy, score the runs."""
    request = request or SearchRequest()
    for strategy in strategies:
        SearchRequest(strategy, k=k).checked()  # type: ignore[arg-type]
    with indexed(dataset, encoder, db, collection) as (store, name, index_seconds):
        searcher = Searcher(store, encoder)
        start = time.perf_counter()
        embeddings = searcher.encode_queries(name, list(dataset.queries.values()), strategies)
        encode_seconds = time.perf_counter() - start
        report = EvalReport(dataset.name, encoder.spec.name, len(dataset.corpus), len(dataset.queries),
                            store.counts(name)[1], k, index_seconds, encode_seconds)
        for strategy in strategies:
            if progress is not None:
                progress(strategy)
            start = time.perf_counter()
            run = document_run(searcher, name, dataset, strategy, max(RECALL_DEPTH, k), embeddings, request)
            seconds = time.perf_counter() - start
            report.scores.append(StrategyScore(strategy, evaluate_run(run, dataset.qrels, k)[0], run, seconds))
    return report


def plot(report: EvalReport, path: Path) -> None:
    """A grouped bar chart of every metric per strategy (the ``eval`` extra: matplotlib)."""
    matplotlib = require("matplotlib", "eval", "Drawing plots")
    matplotlib.use("Agg")
    pyplot = require("matplotlib.pyplot", "eval", "Drawing plots")
    names = metric_names(report.k)
    figure, axes = pyplot.subplots(figsize=(1.6 + 1.4 * len(report.scores), 4.2))
    width = 0.8 / len(names)
    for offset, metric in enumerate(names):
        xs = [i + (offset - (len(names) - 1) / 2) * width for i in range(len(report.scores))]
        bars = axes.bar(xs, [s.metrics[metric] for s in report.scores], width, label=metric)
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.set_xticks(range(len(report.scores)), [s.strategy for s in report.scores])
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{report.dataset}: {report.model}, {report.queries} queries")
    axes.legend(fontsize=8, ncols=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
