"""Fine-tuning all-MiniLM-L6-v2 on Cranfield with generated queries: retrieval quality before and after.

The whole pipeline runs through the ``m3search`` CLI, exactly as a user would run it, in a fresh ``M3SEARCH_HOME``:

1. ``m3search index`` the 1398 Cranfield abstracts with all-minilm-l6-v2;
2. ``m3search finetune generate`` (offline generators: titles, key sentences, keyphrases; hard negatives mined
   from the index; 10 % of the documents held out as a validation split);
3. ``m3search finetune train`` (sentence-transformers, MultipleNegativesRankingLoss), which registers the result
   as a local model;
4. ``m3search eval`` of the base and the fine-tuned model, dense and hybrid, on (a) the held-out generated
   validation split and (b) all 225 real Cranfield queries with their human judgements. The real queries are
   never used for generation or training.

    .venv/bin/python benchmarks/bench_finetune.py --max-length 128   # the committed run: one epoch, ~25 min
    .venv/bin/python benchmarks/bench_finetune.py --max-length 128 --sentence-positive rest   # inverse cloze data
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, base_parser, machine, versions, write_results

CRANFIELD = ROOT / "data" / "cranfield"
BASE = "all-minilm-l6-v2"
METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")
M3SEARCH = [str(Path(sys.executable).parent / "m3search")]


def cli(args: list[str], env: dict[str, str], log: Path) -> tuple[str, float]:
    """Run one m3search command; its stdout, and its wall time. Stderr goes to ``log``."""
    start = time.perf_counter()
    with log.open("a", encoding="utf-8") as err:
        err.write(f"\n$ m3search {' '.join(args)}\n")
        err.flush()
        done = subprocess.run([*M3SEARCH, *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True,
                              check=False)
    seconds = time.perf_counter() - start
    with log.open("a", encoding="utf-8") as err:
        err.write(f"\n[exit {done.returncode} after {seconds:.1f} s]\n")
    if done.returncode != 0:
        raise SystemExit(f"m3search {' '.join(args)} failed ({done.returncode}); see {log}")
    return done.stdout, seconds


def steps(args: Any) -> dict[str, list[str]]:
    """The commands, with placeholders DIR (scratch) and MODEL (the fine-tuned model)."""
    common = ["--precision", "fp32"]
    return {
        "index": ["index", str(CRANFIELD / "corpus.jsonl"), "-c", "cranfield", "--model", BASE, "--db",
                  "DIR/index.sqlite3", *common],
        "generate": ["finetune", "generate", "-c", "cranfield", "--out", "DIR/data", "--db", "DIR/index.sqlite3",
                     "--queries-per-doc", str(args.queries_per_doc), "--validation-split", "0.1",
                     "--hard-negatives", "3", "--seed", "0", "--sentence-positive", args.sentence_positive, "--json",
                     *common],
        "train": ["finetune", "train", "--data", "DIR/data", "--base", BASE, "--out", "DIR/model",
                  "--name", "minilm-cranfield-ft", "--epochs", str(args.epochs), "--batch-size",
                  str(args.batch_size), "--lr", str(args.lr), "--negatives", str(args.negatives), "--seed", "42",
                  *(["--max-steps", str(args.max_steps)] if args.max_steps else []),
                  *(["--max-length", str(args.max_length)] if args.max_length else []),
                  "--no-eval", "--json", "--progress"],
    }


def evaluate(model: str, dataset: Path, db: Path, run: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """``m3search eval`` into collection ``cranfield`` of ``db``: documents already there unchanged are not
    embedded again, so the base model reuses the index of step 1 and the fine-tuned model embeds the corpus once.
    The runs are saved as ``run`` with the strategy before the suffix."""
    out, seconds = cli(["eval", str(dataset), "--model", model, "--strategy", "dense,hybrid", "--precision", "fp32",
                        "--db", str(db), "--collection", "cranfield", "--save-run", str(run), "--json"], env, log)
    report: dict[str, Any] = json.loads(out)
    report["wall_seconds"] = round(seconds, 1)
    return report


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test of ``better`` against ``worse`` (ties left out)."""
    n = better + worse
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2**n) if n else 1.0


def per_query(dataset: Path, runs: Path, key: str) -> dict[str, Any]:
    """Queries whose nDCG@10 the fine-tuned model raised, lowered or kept, per strategy, with a sign test."""
    from m3search.retrieval.beir import load_dataset, read_run
    from m3search.retrieval.evaluation import evaluate_run

    qrels = load_dataset(dataset).qrels
    found: dict[str, Any] = {}
    for strategy in ("dense", "hybrid"):
        before, after = (evaluate_run(read_run(runs / f"{key}.{label}.{strategy}.trec"), qrels)[1]
                         for label in ("before", "after"))
        changes = [after[q]["ndcg@10"] - before[q]["ndcg@10"] for q in before]
        better, worse = sum(c > 1e-9 for c in changes), sum(c < -1e-9 for c in changes)
        found[strategy] = {"better": better, "worse": worse, "same": len(changes) - better - worse,
                           "sign_test_p": sign_test(better, worse)}
    return found


def table(result: dict[str, Any]) -> str:
    lines = []
    for label, key in (("Held-out generated queries (validation split)", "validation"),
                       ("All 225 real Cranfield queries, human judgements", "cranfield")):
        before, after = result["eval"][key]["before"], result["eval"][key]["after"]
        lines += [f"### {label}: {before['queries']} queries, {before['documents']} documents", "",
                  "| strategy | metric | before | after | change |", "| --- | --- | ---: | ---: | ---: |"]
        for old, new in zip(before["strategies"], after["strategies"], strict=True):
            for metric in METRICS:
                change = new[metric] - old[metric]
                lines.append(f"| {old['strategy']} | {metric} | {old[metric]:.4f} | {new[metric]:.4f} | "
                             f"{change:+.4f} ({change / max(old[metric], 1e-9):+.1%}) |")
        lines += ["", "Per query, nDCG@10 after vs before (ties: same value):", "",
                  "| strategy | better | worse | same | sign test p (two-sided) |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for strategy, counts in result["per_query"][key].items():
            lines.append(f"| {strategy} | {counts['better']} | {counts['worse']} | {counts['same']} | "
                         f"{counts['sign_test_p']:.2g} |")
        lines.append("")
    return "\n".join(lines)


def report(result: dict[str, Any], commands: dict[str, list[str]]) -> str:
    train, gen = result["train"], result["generate"]
    kept = gen["kept"]["total"]
    seen = min(train["steps"] * train["params"]["batch_size"], train["examples"] * train["params"]["epochs"])
    text = [
        "# Fine-tuning all-MiniLM-L6-v2 on Cranfield: before and after", "",
        "Written by `benchmarks/bench_finetune.py`. The whole pipeline runs through the `m3search` CLI in a fresh "
        "`M3SEARCH_HOME`, offline, on CPU.", "",
        "## Setup", "",
        f"- Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores (shared with other jobs "
        "while this ran, so the times are indicative); versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".",
        f"- Corpus: the {result['eval']['cranfield']['before']['documents']} Cranfield abstracts, indexed with "
        f"{BASE} (fp32).",
        f"- Generated data (`finetune generate`, offline generators, {gen['parameters']['queries_per_doc']} queries "
        f"per document, hard negatives mined from the index by {gen['parameters']['negatives_strategy']} search, "
        f"{gen['seconds']:.0f} s): {kept} queries kept of {gen['generated']['total']} ("
        + ", ".join(f"{o} {n}" for o, n in gen["kept"].items() if o != "total") + "); "
        f"train {gen['train']['examples']} examples ({gen['train']['documents']} documents), validation "
        f"{gen['validation']['examples']} ({gen['validation']['documents']} held-out documents).",
        f"- Training (`finetune train`): MultipleNegativesRankingLoss, {train['params']['epochs']} epoch(s), "
        f"batch {train['params']['batch_size']}, lr {train['params']['lr']}, {train['params']['negatives']} hard "
        f"negative(s) per query, texts cut to {train['params']['max_length'] or 256} tokens, seed 42: "
        f"{train['steps']} steps in **{train['train_seconds']:.0f} s** (mean loss {train['train_loss']}); "
        f"{seen} of the {train['examples']} training examples seen ({seen / train['examples']:.0%} of one epoch"
        + ("; the steps were capped to keep training near 15 minutes on this machine's 2 shared cores)."
           if train["params"]["max_steps"] else ")."),
        "- Wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["seconds"].items())
        + (f" ({', '.join(result['reused'])}: from an earlier invocation with the same commands, in the same "
           "directory)" if result.get("reused") else "") + ".",
        "- Evaluation (`m3search eval`, fp32, dense and hybrid = RRF of dense and BM25): (a) the generated "
        "validation split (its queries come from held-out documents that training never saw; the corpus searched "
        "is the whole collection), (b) **all 225 real Cranfield queries with their human relevance judgements**. "
        "The real queries were never used to generate data or to train.", "",
        "## Results", "", table(result),
        "## Commands", "", "```",
        *(f"m3search {' '.join(args)}" for args in commands.values()),
        *(f"m3search eval {data} --model {model} --strategy dense,hybrid --precision fp32 --db DIR/{db} "
          "--collection cranfield" for data in ("DIR/data/validation", "benchmarks/data/cranfield")
          for model, db in ((BASE, "index.sqlite3"), ("minilm-cranfield-ft", "tuned.sqlite3"))),
        "# (the benchmark also passes --save-run DIR/runs/... for the per-query comparison)",
        "```", "",
    ]
    return "\n".join(text)


def main() -> None:
    parser = base_parser(__doc__, ())
    parser.add_argument("--queries-per-doc", type=int, default=4)
    parser.add_argument("--sentence-positive", choices=("chunk", "rest"), default="chunk",
                        help="a key sentence's positive: its chunk, or the chunk without it (inverse cloze task)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the files (default: temporary)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: skip the steps whose output is already there (index, data, model)")
    args = parser.parse_args()
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="m3search-finetune-"))
    scratch.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "M3SEARCH_HOME": str(scratch / "home"), "M3SEARCH_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "M3SEARCH_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    log = scratch / "log.txt"
    commands = {name: [a.replace("DIR", str(scratch)) for a in argv] for name, argv in steps(args).items()}
    result: dict[str, Any] = {"machine": machine(), "versions": versions(
        "m3search", "sentence-transformers", "transformers", "torch", "onnxruntime"), "seconds": {}}
    done = {"index": scratch / "index.sqlite3", "generate": scratch / "data" / "report.json",
            "train": scratch / "model" / "m3search_finetune.json"}
    result["reused"] = [name for name, path in done.items() if args.reuse and path.is_file()]
    timings = scratch / "seconds.json"  # wall times of the steps, kept for a --reuse run's report
    if args.reuse and timings.is_file():
        result["seconds"] = {k: v for k, v in json.loads(timings.read_text()).items() if k in result["reused"]}
    for name in ("index", "generate", "train"):
        if name not in result["reused"]:
            _, result["seconds"][name] = cli(commands[name], env, log)
            timings.write_text(json.dumps(result["seconds"]))
    result["generate"] = json.loads(done["generate"].read_text(encoding="utf-8"))
    meta = json.loads(done["train"].read_text(encoding="utf-8"))
    trained = {"model": "minilm-cranfield-ft", "steps": meta["steps"], "train_seconds": meta["train_seconds"],
               "train_loss": meta["train_loss"], "examples": meta["examples"]}
    result["train"] = {**trained, "params": meta["params"], "versions": meta["versions"]}
    result["eval"] = {}
    for key, dataset in (("validation", scratch / "data" / "validation"), ("cranfield", CRANFIELD)):
        result["eval"][key] = {label: evaluate(model, dataset, scratch / db, scratch / "runs" / f"{key}.{label}.trec",
                                        env, log) for label, model, db in
                               (("before", BASE, "index.sqlite3"), ("after", trained["model"], "tuned.sqlite3"))}
        result.setdefault("per_query", {})[key] = per_query(dataset, scratch / "runs", key)
        for label in ("before", "after"):
            result["seconds"][f"eval {key} {label}"] = result["eval"][key][label]["wall_seconds"]
    shown = {name: [a.replace(str(scratch), "DIR").replace(f"{ROOT.parent}/", "") for a in argv]
             for name, argv in commands.items()}
    write_results(args.out, "finetune", result, report(result, shown))


if __name__ == "__main__":
    main()
