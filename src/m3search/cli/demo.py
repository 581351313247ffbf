"""``m3search demo``: embed the bundled English Debian FAQ and answer three example queries."""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from m3search.cli.options import BackendOption, ForceOption, PrecisionOption, encoder_settings
from m3search.models.encoder import Encoder, stack_dense
from m3search.models.loader import load_encoder
from m3search.models.pooled import OnnxEncoder

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
) -> None:
    """Embed a small bundled corpus offline and print ranked hits for three example queries."""
    console = Console()
    docs = load_corpus()
    _, options = encoder_settings(backend, precision, force_precision)
    encoder = load_encoder(model, **options)
    console.print(f"[bold]m3search demo[/]: {len(docs)} Debian FAQ answers, model {model} "
                  f"({_mode(encoder)}, prepared on first use)")
    texts = [(d.get("title", "") + "\n" + d["text"]).strip() for d in docs]
    started = time.perf_counter()
    embeddings = []
    columns = (TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("embed", total=len(texts))
        for emb in encoder.encode_iter(texts, window=32, kind="document"):
            embeddings.append(emb)
            progress.advance(task)
    seconds = time.perf_counter() - started
    matrix = stack_dense(embeddings)
    tokens = sum(e.tokens for e in embeddings)
    truncated = sum(e.truncated for e in embeddings)
    console.print(f"embedded {len(docs)} documents ({tokens} tokens, {truncated} truncated) in {seconds:.1f} s")
    for query in QUERIES:
        vector = stack_dense(encoder.encode_queries([query]))[0]
        scores = matrix @ vector
        table = Table(title=f"[bold]{query}", title_justify="left", show_lines=False)
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("document")
        table.add_column("text")
        for rank, index in enumerate(np.argsort(-scores)[:k], start=1):
            snippet = docs[index]["text"].replace("\n", " ")[:110] + "..."
            table.add_row(str(rank), f"{scores[index]:.3f}", docs[index]["_id"], snippet)
        console.print(table)


def _mode(encoder: Encoder) -> str:
    if isinstance(encoder, OnnxEncoder):
        _ = encoder.session  # resolves backend "auto" (measured once per machine, then cached)
        return f"{encoder.backend} {encoder.precision}"
    return encoder.spec.family
