"""An independent computation of nDCG@k, MRR@k, Recall@100 and MAP from TREC run files and BEIR qrels.

Plain Python, written from the metric definitions (trec_eval conventions: documents ordered by score
descending, ties by document id descending; nDCG gain = relevance grade, discount log2(rank + 1), ideal from
all judged documents; every judged query counts, a query missing from the run scores 0). It shares no code with
m3search, so agreement with ``m3search eval`` checks both the harness and its use of pytrec_eval.

    python benchmarks/independent_eval.py RUN_FILE QRELS_TSV [--k 10]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines()[1:]:
        qid, docid, grade = line.split("\t")
        if int(grade) > 0:
            qrels.setdefault(qid, {})[docid] = int(grade)
    return qrels


def read_run(path: Path) -> dict[str, list[str]]:
    scored: dict[str, list[tuple[float, str]]] = {}
    for line in path.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        scored.setdefault(qid, []).append((float(score), docid))
    return {q: [d for _, d in sorted(pairs, reverse=True)] for q, pairs in scored.items()}


def query_metrics(ranked: list[str], judged: dict[str, int], k: int) -> dict[str, float]:
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(judged.values(), reverse=True)
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
    first = next((i for i, d in enumerate(ranked[:k]) if d in judged), None)
    hits, precisions = 0, 0.0
    for i, d in enumerate(ranked):
        if d in judged:
            hits += 1
            precisions += hits / (i + 1)
    return {f"ndcg@{k}": dcg / idcg if idcg else 0.0, f"mrr@{k}": 0.0 if first is None else 1 / (first + 1),
            "recall@100": sum(d in judged for d in ranked[:100]) / len(judged), "map": precisions / len(judged)}


def evaluate(run: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10) -> dict[str, float]:
    per_query = [query_metrics(run.get(q, []), judged, k) for q, judged in qrels.items()]
    return {name: sum(m[name] for m in per_query) / len(per_query) for name in per_query[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("qrels", type=Path)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(evaluate(read_run(args.run), read_qrels(args.qrels), args.k), indent=2))


if __name__ == "__main__":
    main()
