"""``m3search migrate-store``: copy collections between stores with their vectors (no re-embedding)."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from m3search.settings import get_settings
from m3search.store.migrate import migrate_collection
from m3search.store.urls import open_store


def migrate_store(
    source: Annotated[str, typer.Option("--from", help="store to copy from (sqlite:///a.db, qdrant+edge:///dir, ...)")],
    target: Annotated[str, typer.Option("--to", help="store to copy into (the collections must not exist there)")],
    collections: Annotated[list[str] | None, typer.Option(
        "--collection", "-c", help="collection to copy (repeatable; default: every collection)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the reports as JSON")] = False,
) -> None:
    """Copy collections with their documents, chunks, vectors and model fingerprint; verify the counts."""
    console = Console(stderr=True)
    key = get_settings().qdrant_api_key
    reports = []
    with open_store(source, api_key=key) as src, open_store(target, api_key=key) as dst:
        for name in collections or src.collections():
            documents, _ = src.counts(name)
            with Progress(TextColumn(f"copying {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console) as bar:
                task = bar.add_task(name, total=documents)
                report = migrate_collection(src, dst, name, progress=partial(bar.update, task))
            reports.append(report.as_dict())
            if not as_json:
                typer.echo(f"{name}: {report.documents} documents, {report.chunks} chunks, {report.vectors} vectors "
                           f"copied and verified in {report.seconds:.1f}s")
    if as_json:
        typer.echo(json.dumps(reports))
