"""``m3search demo``: index the bundled English Debian FAQ into the store and answer three example queries with a
hybrid search (dense + bm25, weighted fusion), one hit per document (its best chunk), showing why each hit ranked."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from m3search.cli.options import BackendOption, ForceOption, PrecisionOption, encoder_settings
from m3search.ingest.pipeline import config_for, default_outputs, index_documents
from m3search.models.encoders.base import Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document

QUERIES = (
    "How do I upgrade my system to a new Debian release?",
    "Which package manager should I use to install software?",
    "Is Debian free software and what licenses does it accept?",
)


def load_corpus() -> list[dict[str, str]]:
    """The bundled corpus: the English Debian FAQ in BEIR format (answers as documents)."""
    text = resources.files("m3search.data").joinpath("debian_faq_en.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def demo(
    model: Annotated[str, typer.Option("--model", "-m", help="model to use")] = "all-minilm-l6-v2",
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    force_precision: ForceOption = False,
    k: Annotated[int, typer.Option("--k", min=1, max=20, help="hits per query")] = 3,
    db: Annotated[Path | None, typer.Option("--db", help="index file (default: M3SEARCH_HOME/demo.sqlite3)")] = None,
) -> None:
    """Index a small bundled corpus offline into the store, then search it with three example queries."""
    console = Console()
    settings, options = encoder_settings(backend, precision, force_precision)
    docs = [Document(d["_id"], d["text"], "debian_faq_en.jsonl", d.get("title", "")) for d in load_corpus()]
    encoder = load_encoder(model, **options)
    console.print(f"[bold]m3search demo[/]: {len(docs)} Debian FAQ answers, model {model} "
                  f"({_mode(encoder)}, prepared on first use)")
    collection = f"demo-{encoder.spec.name}"
    columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with SQLiteStore(db or settings.home / "demo.sqlite3") as store:
        if collection in store.collections() and store.active_set(collection).config != config_for(
                encoder, default_outputs(encoder)):
            store.delete_collection(collection)  # the demo's own collection: rebuilt for another mode
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("index", total=len(docs))
            report = index_documents(store, encoder, collection, docs,
                                     progress=lambda n, _chunks: progress.advance(task, n))
        console.print(f"indexed into {store.path} (collection {collection}): {report.added} added, "
                      f"{report.unchanged} unchanged, {report.chunks} chunks embedded "
                      f"({report.truncated} truncated) in {report.seconds:.1f} s")
        searcher = Searcher(store, encoder)
        for query in QUERIES:
            result = searcher.search(collection, query, SearchRequest("hybrid", k=k, group_by="document"))
            weights = ", ".join(f"{n} {w:g}" for n, w in result.details.get("weights", {}).items())
            fused = f"{result.details.get('fusion', 'fused')} fusion of {weights or ' + '.join(result.retrievers)}"
            table = Table(title=f"[bold]{query}[/]  [dim]hybrid ({fused}), {result.took_ms:.0f} ms[/]",
                          title_justify="left")
            for column, justify in (("rank", "right"), ("score", "right"), ("document", "left"),
                                    ("why", "left"), ("text", "left")):
                table.add_column(column, justify=justify)  # type: ignore[arg-type]
            for rank, hit in enumerate(result.hits, start=1):
                why = "\n".join(f"{name} #{c.rank} ({c.score:.2f})" for name, c in hit.breakdown.items())
                more = f"\n+{len(hit.other_chunks)} more chunk(s)" if hit.other_chunks else ""
                table.add_row(str(rank), f"{hit.score:.4f}", hit.document_id + more, why,
                              hit.text.replace("\n", " ")[:80] + "...")
            console.print(table)


def _mode(encoder: Encoder) -> str:
    if isinstance(encoder, OnnxEncoder):
        _ = encoder.session  # resolves backend "auto" (measured once per machine, then cached)
        return f"{encoder.backend} {encoder.precision}"
    return encoder.spec.family
