"""``m3search finetune train``: fine-tune a model on generated data, register it, evaluate it before and after."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from m3search.cli.options import encoder_settings
from m3search.errors import InputError
from m3search.finetune import TrainParams, train
from m3search.models.encoders.loader import load_encoder
from m3search.models.local import base_spec, check_local_name, lookup_spec, register_local
from m3search.models.resolve import resolve_model
from m3search.retrieval.beir import load_dataset
from m3search.retrieval.evaluation import EvalReport, evaluate, metric_names

EVAL_FILE = "eval.json"


def default_name(base: str, data: Path) -> str:
    """``<base>-ft-<data directory name>``, reduced to the characters a local model name allows."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", data.resolve().name.lower()).strip("-._") or "data"
    return f"{base}-ft-{slug}"[:80]


def before_after(dataset_dir: Path, before: str, after: str, strategies: list[str], precision: str,
                 k: int = 10) -> dict[str, Any]:
    """Evaluate two models on one BEIR directory: ``{"dataset", "strategies", "before": report, "after": report}``."""
    dataset = load_dataset(dataset_dir)
    _, options = encoder_settings(None, precision, False)
    reports: dict[str, EvalReport] = {}
    for label, model in (("before", before), ("after", after)):
        reports[label] = evaluate(dataset, load_encoder(model, **options), strategies, k=k)
    return {"dataset": str(dataset_dir), "precision": precision, "strategies": strategies,
            **{label: report.as_dict() for label, report in reports.items()}}


def print_comparison(result: dict[str, Any], k: int = 10) -> None:
    """One row per strategy and metric: before, after, difference."""
    before, after = result["before"], result["after"]
    table = Table(title=f"{result['dataset']} ({before['queries']} queries): {before['model']} -> {after['model']}",
                  title_justify="left")
    for column in ("strategy", "metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column in ("strategy", "metric") else "right")
    for old, new in zip(before["strategies"], after["strategies"], strict=True):
        for metric in metric_names(k):
            change = new[metric] - old[metric]
            table.add_row(old["strategy"], metric, f"{old[metric]:.4f}", f"{new[metric]:.4f}", f"{change:+.4f}")
    Console(highlight=False).print(table)


def train_command(
    data: Annotated[Path, typer.Option("--data", "-d", help="output of 'finetune generate' (train.jsonl, ...)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the fine-tuned model")],
    base: Annotated[str, typer.Option("--base", help="model to start from")] = "all-minilm-l6-v2",
    name: Annotated[str | None, typer.Option("--name", help="local model name (default BASE-ft-DATADIR)")] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="passes over train.jsonl")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="queries per batch (in-batch negatives)")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="peak learning rate")] = 2e-5,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="stop after this many steps")] = None,
    negatives: Annotated[int, typer.Option("--negatives", help="hard negatives per query")] = 1,
    max_length: Annotated[int | None, typer.Option("--max-length", help="tokens per text (default: base's)")]
    = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of shuffling and weights")] = 42,
    run_eval: Annotated[bool | None, typer.Option(
        "--eval/--no-eval", help="evaluate before and after on DATA/validation (default: when it exists)")] = None,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="strategies to evaluate, comma-separated")]
    = "dense",
    eval_precision: Annotated[str, typer.Option("--eval-precision", help="precision of both evaluations")]
    = "fp32",
    progress: Annotated[bool | None, typer.Option(
        "--progress/--quiet", help="training progress bar on stderr (default: shown unless --json)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Fine-tune BASE on DATA/train.jsonl (sentence-transformers, MultipleNegativesRankingLoss) and register it."""
    if not data.is_dir():
        raise InputError(f"data directory {data} does not exist; create it with 'm3search finetune generate'")
    validation = data / "validation"
    if run_eval and not validation.is_dir():
        raise InputError(f"--eval needs {validation} (a BEIR directory, written by 'finetune generate')")
    settings, _ = encoder_settings(None, eval_precision, False)
    base_spec(base, settings)  # refuses bases that cannot be fine-tuned before any work
    spec = lookup_spec(base, settings)
    model_name = check_local_name(name or default_name(spec.base or spec.name, data))
    params = TrainParams(epochs, batch_size, lr, max_steps, negatives, max_length, seed).checked()
    base_dir = resolve_model(spec, settings).path
    console = Console(stderr=True, highlight=False)
    result = train(spec, base_dir, data, out, params, progress=not as_json if progress is None else progress,
                   log=lambda line: console.print(line, markup=False))
    model = register_local(model_name, spec.name, out, description=f"fine-tuned from {spec.name} on {data.name}",
                           details={k: result.meta[k] for k in ("data", "params", "steps", "train_seconds")},
                           settings=settings)
    summary: dict[str, Any] = {"model": model.name, "base": model.base, "path": model.path,
                               "examples": result.examples, "steps": result.steps,
                               "train_seconds": round(result.seconds, 1), "train_loss": result.loss}
    if run_eval or (run_eval is None and validation.is_dir()):
        strategies = [s.strip() for s in strategy.split(",") if s.strip()]
        comparison = before_after(validation, spec.name, model.name, strategies, eval_precision)
        (out / EVAL_FILE).write_text(json.dumps(comparison, indent=2), encoding="utf-8")
        summary["eval"] = comparison
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"trained {model.name} from {model.base}: {result.examples} examples, {result.steps} steps, "
               f"{result.seconds:.0f} s, loss {result.loss}; saved to {model.path}")
    if "eval" in summary:
        print_comparison(summary["eval"])
    typer.echo(f"use it with --model {model.name} (e.g. m3search index DOCS -c NAME --model {model.name})")
