"""``m3search eval --tune``: pick ``hybrid``'s fusion (method, per-retriever weights, RRF's k) on judged queries.

Each retriever of the fusion runs once per query; every setting of the grid then fuses those same rankings (what
``hybrid`` itself does with them, so the tuned runs equal the searches that follow). The estimate reported is
k-fold cross-validated over queries: each fold's queries are scored with the setting chosen on the other folds, so
the figure is what tuning buys on queries it has not seen, not the optimistic in-sample best.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3search.errors import InputError
from m3search.models.encoders.base import Encoder
from m3search.retrieval.beir import Dataset, Qrels, Run
from m3search.retrieval.defaults import hybrid_request, hybrid_settings, save_fusion, saved_fusion
from m3search.retrieval.evaluation import RECALL_DEPTH, evaluate_run, indexed
from m3search.retrieval.fusion import DEFAULT_RRF_K, FUSION_METHODS, FusionSettings, Ranking
from m3search.retrieval.grouping import CHUNKS_PER_DOCUMENT
from m3search.retrieval.search import Searcher
from m3search.retrieval.strategies import fusion_retrievers
from m3search.retrieval.types import SearchRequest
from m3search.types import Embedding

WEIGHT_STEPS = tuple(i / 10 for i in range(11))  # the first retriever's share of the weight; the second gets the rest
RRF_KS = (5, 10, 20, 40, DEFAULT_RRF_K, 100)
DEFAULT_FOLDS = 5


def _documents(hits: Iterable[tuple[str, float]], depth: int) -> dict[str, float]:
    """The first ``depth`` documents of ``(document id, score)`` chunk hits, best first: each scores its best chunk
    (:func:`~m3search.retrieval.grouping.group_hits`'s rule, on bare pairs: thousands of fusions per query)."""
    docs: dict[str, float] = {}
    for document, score in hits:
        docs.setdefault(document, score)
        if len(docs) == depth:
            break
    return docs


@dataclass(frozen=True)
class Candidates:
    """Per judged query, the chunk ranking of each fused retriever (as deep as ``hybrid`` looks in an eval's first
    try: :data:`~m3search.retrieval.grouping.CHUNKS_PER_DOCUMENT` chunks per wanted document), and the chunks'
    documents. (An eval whose first try covers fewer documents than it wants searches deeper; the tuner does not:
    for documents of many chunks its runs hold fewer documents and its score fusions normalise over shorter lists.
    On the bundled sets the first try always suffices, and the tuner's runs equal the eval's: tested.)"""

    names: tuple[str, ...]
    parts: dict[str, dict[str, Ranking]]
    documents: dict[int, str]
    depth: int

    def only(self, name: str) -> Candidates:
        """The same candidates, one retriever's only."""
        return Candidates((name,), {q: {name: parts[name]} for q, parts in self.parts.items()}, self.documents,
                          self.depth)

    def run(self, settings: FusionSettings) -> Run:
        """The document run ``hybrid`` with ``settings`` gives (a document scores its best chunk)."""
        run: Run = {}
        for qid, parts in self.parts.items():
            fused = settings.fuse(parts)[: CHUNKS_PER_DOCUMENT * self.depth]
            run[qid] = _documents(((self.documents[c], s) for c, s in fused), self.depth)
        return run


def collect(searcher: Searcher, collection: str, dataset: Dataset, embeddings: Sequence[Embedding | None],
            names: Sequence[str], k: int) -> Candidates:
    """Run each retriever of ``names`` once per query, as deep as :func:`~.evaluation.document_run` asks."""
    depth = max(RECALL_DEPTH, k)
    parts: dict[str, dict[str, Ranking]] = {}
    documents: dict[int, str] = {}
    for (qid, text), embedding in zip(dataset.queries.items(), embeddings, strict=True):
        found: dict[str, Ranking] = {}
        for name in names:  # hybrid's first stages: each retriever's top max(candidates, chunks ranked) chunks
            request = SearchRequest(name, k=CHUNKS_PER_DOCUMENT * depth, group_by="chunk")  # type: ignore[arg-type]
            hits = searcher.search_embedded(collection, text, embedding, request).hits
            found[name] = [(hit.chunk_id, hit.score) for hit in hits]
            documents.update((hit.chunk_id, hit.document_id) for hit in hits)
        parts[qid] = found
    return Candidates(tuple(names), parts, documents, depth)


def grid(names: Sequence[str]) -> list[FusionSettings]:
    """Every setting tried: each method at each weight split (and RRF at each k)."""
    if len(names) != 2:
        raise InputError(f"tuning fuses two retrievers, not {', '.join(names)}")
    first, second = names
    found: list[FusionSettings] = []
    for method in FUSION_METHODS:
        for share in WEIGHT_STEPS:
            weights = {first: share, second: round(1 - share, 10)}
            found.extend(FusionSettings(method, weights, rrf_k) for rrf_k in (RRF_KS if method == "rrf" else
                                                                             (DEFAULT_RRF_K,)))
    return found


@dataclass
class Scored:
    """One setting's metrics: means over all queries, and the tuned metric per query."""

    settings: FusionSettings
    metrics: dict[str, float]
    per_query: dict[str, float] = field(repr=False)


def score(candidates: Candidates, qrels: Qrels, settings: FusionSettings, k: int) -> Scored:
    means, per_query = evaluate_run(candidates.run(settings), qrels, k)
    metric = f"ndcg@{k}"
    return Scored(settings, means, {q: m[metric] for q, m in per_query.items()})


def folds_of(queries: Sequence[str], folds: int, seed: int = 0) -> list[list[str]]:
    """``folds`` disjoint, near-equal groups of the queries, shuffled with ``seed``."""
    if folds < 2 or folds > len(queries):
        raise InputError(f"--folds must be from 2 to the number of judged queries ({len(queries)}), not {folds}")
    order = sorted(queries)
    random.Random(seed).shuffle(order)
    return [order[i::folds] for i in range(folds)]


def _best(scored: Sequence[Scored], queries: Sequence[str]) -> Scored:
    """The setting with the highest mean over ``queries`` (ties: the first in grid order)."""
    return max(scored, key=lambda s: sum(s.per_query[q] for q in queries) / len(queries))


@dataclass
class TuneReport:
    """What ``eval --tune`` measured: the settings before, each retriever alone, the chosen settings with their
    in-sample and cross-validated nDCG@k, and each fold's choice."""

    k: int
    queries: int
    folds: int
    before: Scored
    singles: dict[str, Scored]
    chosen: Scored
    cv_ndcg: float
    fold_choices: list[FusionSettings]
    tried: int
    saved: bool = False
    scored: list[Scored] = field(default_factory=list, repr=False)  # every setting of the grid, in grid order

    @property
    def better(self) -> bool:
        """Whether the cross-validated estimate beats the settings before (by more than rounding)."""
        return self.cv_ndcg > self.before.metrics[f"ndcg@{self.k}"] + 1e-9

    def as_dict(self) -> dict[str, Any]:
        metric = f"ndcg@{self.k}"
        return {
            "metric": metric, "queries": self.queries, "folds": self.folds, "settings_tried": self.tried,
            "before": {**self.before.settings.as_dict(), **_rounded(self.before.metrics)},
            "singles": {name: _rounded(s.metrics) for name, s in self.singles.items()},
            "chosen": self.chosen.settings.as_dict(),
            "chosen_in_sample": _rounded(self.chosen.metrics),
            f"chosen_cv_{metric}": round(self.cv_ndcg, 4),
            "fold_choices": [s.as_dict() for s in self.fold_choices], "saved": self.saved,
        }


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in metrics.items()}


def tune(candidates: Candidates, qrels: Qrels, before: FusionSettings, *, k: int = 10,
         folds: int = DEFAULT_FOLDS, seed: int = 0) -> TuneReport:
    """Score every setting of the grid, choose the best on all queries, and cross-validate that choice."""
    queries = sorted(candidates.parts)
    groups = folds_of(queries, folds, seed)
    scored = [score(candidates, qrels, s, k) for s in grid(candidates.names)]
    held_out: dict[str, float] = {}
    choices = []
    for group in groups:
        test = set(group)
        best = _best(scored, [q for q in queries if q not in test])
        choices.append(best.settings)
        held_out.update((q, best.per_query[q]) for q in group)
    singles = {name: score(candidates.only(name), qrels, FusionSettings("rrf", {name: 1.0}), k)
               for name in candidates.names}
    return TuneReport(k, len(queries), folds, score(candidates, qrels, before, k), singles, _best(scored, queries),
                      sum(held_out.values()) / len(queries), choices, len(scored), scored=scored)


def tune_dataset(dataset: Dataset, encoder: Encoder, *, k: int = 10, folds: int = DEFAULT_FOLDS, seed: int = 0,
                 db: Path | None = None, collection: str | None = None, save: bool = False) -> TuneReport:
    """Index ``dataset`` (into ``db``, or a temporary store), tune ``hybrid`` on its queries, and with ``save`` keep
    the chosen settings as the collection's default when their cross-validated nDCG@k beats the settings before."""
    with indexed(dataset, encoder, db, collection) as (store, name, _):
        searcher = Searcher(store, encoder)
        target = store.active_set(name)
        embeddings = searcher.encode_queries(name, list(dataset.queries.values()), ["hybrid"])
        names = fusion_retrievers(target.config.outputs)
        candidates = collect(searcher, name, dataset, embeddings, names, k)
        before = hybrid_settings(hybrid_request(SearchRequest(), saved_fusion(store, target), names), names)
        report = tune(candidates, dataset.qrels, before, k=k, folds=folds, seed=seed)
        if save and report.better:
            save_fusion(store, target, report.chosen.settings)
            report.saved = True
    return report
