"""Token budget of one inference call (``batch_tokens``): encode speed for each budget, in one run.

The runtime sorts texts by length and packs each call up to ``batch_tokens`` padded tokens (at most
``max_batch_size`` texts). A larger call amortises per-call costs; a smaller one keeps a layer's activations in the
CPU's caches between the graph's operators. Measured here for the default modes of both backends:
- MiniLM passages (50-300 words, max length 256) and short sentences (5-40 words), 2 threads;
- full-size BGE-M3 (random weights) passages (10-380 words, max length 512), dense + sparse + ColBERT.
Texts/s per budget, median of ``--rounds`` rounds, budgets and engines interleaved (the machine's speed drifts).

``--processes N`` also runs each engine as a user does: alone in a fresh process, with the library's defaults
(default budget, spinning threads), the engines alternating N times; each alternation's ratio to the first engine
is kept, and the table gives their median and range.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_bge_m3
import bench_minilm
from common import base_parser, cranfield_spans, machine, versions, write_results

BUDGETS = (512, 1024, 2048, 4096, 8192)
ENGINES = ("m3search-ort-int8-dynamic", "m3search-ov-int8-dynamic", "m3search-ov-int8-static")
BGE_M3_ENGINES = ("m3search-ort-int8-dynamic", "m3search-ov-int8-dynamic")


def sentences(count: int) -> list[str]:
    return cranfield_spans(count, 5, 40, seed=1)


def sweep(encoders: dict[str, Any], texts: list[str], budgets: tuple[int, ...], rounds: int,
          **kwargs: Any) -> dict[str, dict[str, float]]:
    times: dict[tuple[str, int], list[float]] = {}
    for encoder in encoders.values():
        encoder.encode(texts[:4], **kwargs)  # warm-up: session built
    for _ in range(rounds):
        for budget in budgets:
            for name, encoder in encoders.items():
                encoder.max_batch_size, encoder.batch_tokens = 64, budget
                start = time.perf_counter()
                encoder.encode(texts, **kwargs)
                times.setdefault((name, budget), []).append(time.perf_counter() - start)
    return {name: {str(b): round(len(texts) / float(np.median(times[(name, b)])), 2) for b in budgets}
            for name in encoders}


def quiet(encoders: dict[str, Any], no_spinning: bool) -> dict[str, Any]:
    """The encoders, their sessions (opened on first use) without spinning threads if asked."""
    for encoder in encoders.values() if no_spinning else ():
        encoder.options = dataclasses.replace(encoder.options, spinning=False)
    return encoders


def case_inputs(case: str, passages: int, layers: int | None) -> tuple[list[str], dict[str, Any]]:
    """The texts and encode options of one case ("minilm-passages", "minilm-sentences", "bge-m3-passages",
    "bge-m3-sentences")."""
    if case == "minilm-passages":
        return bench_minilm.passages(passages), {"max_length": bench_minilm.MAX_LENGTH}
    if case == "minilm-sentences":
        return sentences(4 * passages), {}
    texts = bench_bge_m3.make_inputs("passages", passages) if case == "bge-m3-passages" else sentences(16 * passages)
    return texts, {"outputs": ["dense", "sparse", "colbert"], "max_length": 512}


def child(spec: str, threads: int, rounds: int) -> None:
    """One engine on one case in this fresh process, library defaults; prints its texts/s as JSON."""
    engine, case, count, layers = spec.split("|")
    texts, kwargs = case_inputs(case, int(count), int(layers) or None)
    encoder = (bench_minilm.encoder_for(engine, threads) if case.startswith("minilm")
               else bench_bge_m3.encoder_for(engine, threads, int(layers) or None))
    encoder.encode(texts[:8], **kwargs)  # warm-up: session built
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        encoder.encode(texts, **kwargs)
        rates.append(len(texts) / (time.perf_counter() - start))
    print(json.dumps({"texts_per_s": float(np.median(rates))}))


def in_processes(engines: list[str], case: str, threads: int, rounds: int, alternations: int) -> dict[str, list[float]]:
    """Texts/s of each engine on ``case`` ("name|count|layers"), each run in a fresh process, the engines
    alternating ``alternations`` times."""
    rates: dict[str, list[float]] = {e: [] for e in engines}
    for _ in range(alternations):
        for engine in engines:
            out = subprocess.run([sys.executable, __file__, "--child", f"{engine}|{case}", "--threads", str(threads),
                                  "--rounds", str(rounds)], check=True, capture_output=True, text=True).stdout
            rates[engine].append(json.loads(out.strip().splitlines()[-1])["texts_per_s"])
    return rates


def main() -> None:
    parser = base_parser(__doc__, ENGINES)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=0,
                        help="also run each engine alone in fresh processes with the library's defaults, the "
                             "engines alternating this many times")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passages", type=int, default=240)
    parser.add_argument("--bge-m3-passages", type=int, default=16)
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--bge-m3-layers", type=int, default=None,
                        help="BGE-M3's width with this many layers (default: all 24); lets @torch engines run")
    parser.add_argument("--name", default="budget", help="results file name (NAME.json, NAME.md)")
    parser.add_argument("--no-spinning", action="store_true",
                        help="sessions' idle threads do not spin: the engines share one process, and one engine's "
                             "spinning threads would take the cores from the next")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.threads, args.rounds)
        return
    budgets = tuple(int(b) for b in args.budgets.split(","))
    engines = args.engines.split(",")
    m3_engines = [e for e in engines if e.split("@")[0] in BGE_M3_ENGINES and (args.bge_m3_layers or "@" not in e)]
    m3_label = f"BGE-M3 {args.bge_m3_layers} layers" if args.bge_m3_layers else "BGE-M3"
    plan = [("minilm-passages", "MiniLM passages", args.passages),
            ("minilm-sentences", "MiniLM sentences", args.passages)]
    if args.bge_m3_passages:
        plan += [("bge-m3-passages", f"{m3_label} passages", args.bge_m3_passages),
                 ("bge-m3-sentences", f"{m3_label} sentences", args.bge_m3_passages)]
    layers = args.bge_m3_layers or 0
    cases: dict[str, dict[str, dict[str, float]]] = {}
    for model, group in itertools.groupby(plan, key=lambda item: item[0].rsplit("-", 1)[0]):
        encoders = quiet({e: bench_minilm.encoder_for(e, args.threads) for e in engines} if model == "minilm" else
                         {e: bench_bge_m3.encoder_for(e, args.threads, args.bge_m3_layers) for e in m3_engines},
                         args.no_spinning)
        for case, label, count in group:
            texts, kwargs = case_inputs(case, count, args.bge_m3_layers)
            cases[label] = sweep(encoders, texts, budgets, args.rounds, **kwargs)
        del encoders  # this model's sessions are released before the next model's load
    command = " ".join(["python benchmarks/bench_budget.py", *sys.argv[1:]])
    result: dict[str, Any] = {
        "machine": machine(), "versions": versions("m3search", "onnxruntime", "openvino"), "threads": args.threads,
        "budgets": list(budgets), "rounds": args.rounds, "command": command, "cases": cases}
    if args.processes:
        result["alternations"] = args.processes
        result["processes"] = {label: in_processes(m3_engines if case.startswith("bge-m3") else engines,
                                                   f"{case}|{count}|{layers}", args.threads, args.rounds,
                                                   args.processes)
                               for case, label, count in plan}
    write_results(args.out, args.name, result, table(result))


def table(result: dict[str, Any]) -> str:
    budgets = [str(b) for b in result["budgets"]]
    m = result["machine"]
    lines = ["# Token budget per inference call", "",
             f"Texts/s by `batch_tokens` (padded tokens per call, at most 64 texts), median of {result['rounds']} "
             f"interleaved rounds, {result['threads']} threads; {m['cpu']} ({', '.join(m.get('flags', []))}). "
             f"Reproduce: `{result['command']}`.", "",
             "| case | engine | " + " | ".join(budgets) + " | best vs 8192 |", "|" + " --- |" * (len(budgets) + 3)]
    for case, engines in result["cases"].items():
        for engine, rates in engines.items():
            best = max(rates, key=lambda b: rates[b])
            cells = [f"**{rates[b]}**" if b == best else str(rates[b]) for b in budgets]
            base = rates.get("8192")
            gain = f"{rates[best] / base:.2f}x ({best})" if base else "-"
            lines.append(f"| {case} | {engine} | " + " | ".join(cells) + f" | {gain} |")
    if "processes" in result:
        lines += ["", f"Each engine alone in a fresh process with the library's defaults (default budget, spinning "
                      f"threads), the engines alternating {result['alternations']} times; texts/s is the median of "
                      f"{result['rounds']} rounds in each process. Ratio: to the `@torch` engine of the same "
                      "alternation (else the first engine), median and range over the alternations.", "",
                  "| case | engine | texts/s (median) | ratio | range |", "| --- | --- | --- | --- | --- |"]
        for case, engines in result["processes"].items():
            base = next((e for e in engines if "@torch" in e), next(iter(engines)))
            for engine, rates in engines.items():
                ratios = [r / b for r, b in zip(rates, engines[base], strict=True)]
                lines.append(f"| {case} | {engine} | {np.median(rates):.1f} | {np.median(ratios):.2f}x | "
                             f"{min(ratios):.2f}-{max(ratios):.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
