"""Token budget of one inference call (``batch_tokens``): encode speed for each budget, in one run.

The runtime sorts texts by length and packs each call up to ``batch_tokens`` padded tokens (at most
``max_batch_size`` texts). A larger call amortises per-call costs; a smaller one keeps a layer's activations in the
CPU's caches between the graph's operators. Measured here for the default modes of both backends:
- MiniLM passages (50-300 words, max length 256) and short sentences (5-40 words), 2 threads;
- full-size BGE-M3 (random weights) passages (10-380 words, max length 512), dense + sparse + ColBERT.
Texts/s per budget, median of ``--rounds`` rounds, budgets and engines interleaved (the machine's speed drifts).
"""

from __future__ import annotations

import dataclasses
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


def main() -> None:
    parser = base_parser(__doc__, ENGINES)
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
    budgets = tuple(int(b) for b in args.budgets.split(","))
    engines = args.engines.split(",")
    minilm = quiet({e: bench_minilm.encoder_for(e, args.threads) for e in engines}, args.no_spinning)
    cases = {
        "MiniLM passages": sweep(minilm, bench_minilm.passages(args.passages), budgets, args.rounds,
                                 max_length=bench_minilm.MAX_LENGTH),
        "MiniLM sentences": sweep(minilm, sentences(4 * args.passages), budgets, args.rounds),
    }
    del minilm
    if args.bge_m3_passages:
        m3 = quiet({e: bench_bge_m3.encoder_for(e, args.threads, args.bge_m3_layers) for e in engines
                    if e.split("@")[0] in BGE_M3_ENGINES and (args.bge_m3_layers or "@" not in e)}, args.no_spinning)
        label = f"BGE-M3 {args.bge_m3_layers} layers" if args.bge_m3_layers else "BGE-M3"
        cases[f"{label} passages"] = sweep(m3, bench_bge_m3.make_inputs("passages", args.bge_m3_passages), budgets,
                                         args.rounds, outputs=["dense", "sparse", "colbert"], max_length=512)
    command = " ".join(["python benchmarks/bench_budget.py", *sys.argv[1:]])
    result = {"machine": machine(), "versions": versions("m3search", "onnxruntime", "openvino"),
              "threads": args.threads, "budgets": list(budgets), "rounds": args.rounds, "command": command,
              "cases": cases}
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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
