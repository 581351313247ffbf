"""``m3search eval --tune``: choose ``hybrid``'s fusion on judged queries, print the before/after table, save it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from m3search.models.encoders.base import Encoder
from m3search.retrieval.beir import Dataset
from m3search.retrieval.evaluation import metric_names
from m3search.retrieval.tuning import TuneReport, tune_dataset


def run_tune(data: Dataset, encoder: Encoder, *, k: int, folds: int, db: Path | None, collection: str | None,
             save: bool, as_json: bool) -> None:
    """Tune, then print the report (JSON or a table) and what was saved where."""
    report = tune_dataset(data, encoder, k=k, folds=folds, db=db, collection=collection, save=save and db is not None)
    if as_json:
        typer.echo(json.dumps({"dataset": data.name, "model": encoder.spec.name, **report.as_dict()}, indent=2))
        return
    print_tune(report, f"{data.name}: {encoder.spec.name}, {report.queries} queries")
    console = Console(highlight=False, soft_wrap=True)
    target = f"collection '{collection or f'eval-{data.name}'}' in {db}"
    if report.saved:
        console.print(f"saved as the default of hybrid searches in {target}: {report.chosen.settings.describe()}")
    elif not report.better:
        console.print(f"not saved: the {report.folds}-fold estimate does not beat the settings before, which stay")
    elif db is None:
        console.print("not saved: the index was temporary (give --db and --collection to save it with a collection)")
    else:
        console.print("not saved (--no-save)")


def print_tune(report: TuneReport, title: str) -> None:
    """Each retriever alone, hybrid before, and the tuned choice: in-sample and cross-validated."""
    metric = metric_names(report.k)[0]
    table = Table(title=title, title_justify="left")
    for column in ("hybrid fusion", "settings", metric):
        table.add_column(column, justify="right" if column == metric else "left")
    for name, scored in report.singles.items():
        table.add_row(f"{name} alone", "-", f"{scored.metrics[metric]:.4f}")
    table.add_row("before", report.before.settings.describe(), f"{report.before.metrics[metric]:.4f}")
    table.add_row(f"tuned ({report.folds}-fold CV estimate)", report.chosen.settings.describe(),
                  f"[bold]{report.cv_ndcg:.4f}[/]")
    table.add_row("tuned (in-sample, optimistic)", "", f"{report.chosen.metrics[metric]:.4f}")
    Console(highlight=False).print(table)
    choices = sorted({s.describe() for s in report.fold_choices})
    Console(highlight=False, soft_wrap=True).print(
        f"{report.tried} settings tried; the folds chose: {'; '.join(choices)}", markup=False)
