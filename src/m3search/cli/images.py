"""``m3search index`` for image collections: what ``index`` runs when the model is an image model (CLIP)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from m3search.cli import exits
from m3search.cli.options import encoder_settings
from m3search.errors import InputError
from m3search.ingest.images import IMAGE_COLLECTION_HINT, index_images
from m3search.ingest.pipeline import IndexReport
from m3search.ingest.sources import Sources, read_images
from m3search.models.encoders.images import is_image_path
from m3search.models.encoders.loader import load_encoder
from m3search.models.local import lookup_spec
from m3search.models.registry import is_image_model
from m3search.settings import get_settings
from m3search.store.urls import configured_store


def wants_images(model: str | None) -> bool:
    """Whether ``index`` with ``model`` (default: M3SEARCH_DEFAULT_MODEL) builds an image collection."""
    return is_image_model(lookup_spec(model or get_settings().default_model))


def explain_images(sources: Sources) -> Sources:
    """Images skipped by a text model's indexing say what to do with them."""
    for index, problem in enumerate(sources.problems):
        if is_image_path(Path(problem.source)) and problem.reason.startswith("unsupported type"):
            sources.problems[index] = type(problem)(problem.source, f"an image; {IMAGE_COLLECTION_HINT}")
    return sources


def index_image_files(paths: list[Path], collection: str, *, model: str | None, db: Path | None,
                      store_url: str | None, max_bytes: int, backend: str | None, precision: str | None,
                      force_precision: bool, as_json: bool) -> None:
    """Index image files into ``collection``; exit 1 if any file was skipped (each is listed with its reason)."""
    sources = read_images(paths, max_bytes=max_bytes)
    if not sources.documents:
        for problem in sources.problems:
            typer.echo(f"skipped {problem.source}: {problem.reason}")
        raise InputError(f"no images to index in {', '.join(map(str, paths))} ({len(sources.problems)} skipped, "
                         f"listed above); an image model's collection holds images only")
    _, options = encoder_settings(backend, precision, force_precision)
    encoder = load_encoder(model, **options)
    console = Console(stderr=True)
    bar = Progress(TextColumn("indexing images"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                   TimeElapsedColumn(), console=console, transient=False)
    with configured_store(get_settings(), db=db, url=store_url) as store, bar:
        task = bar.add_task("images", total=len(sources.documents))
        report = index_images(store, encoder, collection, sources.documents,
                              progress=lambda docs, _: bar.update(task, advance=docs))
    report.problems = sources.problems
    print_report(report, f"{collection}: {report.added} added, {report.updated} updated, {report.unchanged} "
                         f"unchanged images in {report.seconds:.1f} s", as_json)


def print_report(report: IndexReport, summary: str, as_json: bool) -> None:
    """An indexing run's report (the summary line, or JSON) and the skipped files; exit 1 (done, some skipped) if
    any was skipped."""
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        typer.echo(summary)
        for problem in report.problems:
            typer.echo(f"skipped {problem.source}: {problem.reason}")
    if report.problems:
        raise typer.Exit(exits.PARTIAL)
