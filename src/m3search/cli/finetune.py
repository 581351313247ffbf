"""``m3search finetune``: fine-tuning data generated from a collection (``generate``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from m3search.cli.finetune_train import train_command
from m3search.cli.index import CollectionOption, DbOption, ModelOption, StoreOption, encoder_for, open_store
from m3search.cli.options import BackendOption, PrecisionOption
from m3search.errors import ConfigError
from m3search.finetune import GenerateOptions, generate, write_output
from m3search.llm import ChatEndpoint

app = typer.Typer(help="Fine-tuning data (and training) for a collection's model.", no_args_is_help=True)


def _summary(report: dict[str, Any], out: Path) -> list[str]:
    generated, kept = report["generated"], report["kept"]
    origins = ", ".join(f"{o} {n}/{generated.get(o, 0)}" for o, n in kept.items() if o != "total")
    dropped = ", ".join(f"{r.replace('_', ' ')} {c['total']}" for r, c in report["dropped"].items() if c["total"])
    train, validation = report["train"], report["validation"]
    return [f"{report['collection']}: kept {kept['total']} of {generated['total']} queries "
            f"({origins or 'none'}) from {report['documents_used']} of {report['documents']} documents "
            f"in {report['seconds']:.1f} s",
            f"dropped: {dropped or 'none'}",
            f"train {train['examples']} examples ({train['documents']} documents), validation "
            f"{validation['examples']} ({validation['documents']} documents) -> {out}"]


@app.command("generate")
def generate_command(
    collection: CollectionOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory (train.jsonl, validation.jsonl, "
                                                          "validation/, report.json)")],
    queries_per_doc: Annotated[int, typer.Option("--queries-per-doc", help="queries generated per document")] = 4,
    validation_split: Annotated[float, typer.Option("--validation-split",
                                                    help="share of documents held out for validation")] = 0.1,
    hard_negatives: Annotated[int, typer.Option("--hard-negatives", help="hard negatives per query (0: none)")] = 3,
    negatives_skip: Annotated[int, typer.Option(
        "--negatives-skip", help="top documents skipped when mining negatives (likely false negatives)")] = 2,
    negatives_from: Annotated[str, typer.Option("--negatives-from", help="search that mines negatives: hybrid or "
                                                                         "dense")] = "hybrid",
    filter_k: Annotated[int, typer.Option(
        "--filter-k", help="keep a query when its document is in the BM25 or dense top k")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="seed of the split and the keyphrase lengths")] = 0,
    sentence_positive: Annotated[str, typer.Option(
        "--sentence-positive", help="a key sentence's positive: its chunk, or 'rest' (the chunk without the "
                                    "sentence: inverse cloze task)")] = "chunk",
    llm: Annotated[str | None, typer.Option("--llm", help="OpenAI-compatible endpoint URL: generate queries with "
                                                          "an LLM instead of offline")] = None,
    llm_model: Annotated[str | None, typer.Option("--llm-model", help="the endpoint's model name")] = None,
    llm_key: Annotated[str | None, typer.Option("--llm-key", envvar="M3SEARCH_LLM_API_KEY",
                                                help="bearer token of the endpoint (env M3SEARCH_LLM_API_KEY)")]
    = None,
    model: ModelOption = None,
    db: DbOption = None,
    store_url: StoreOption = None,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Generate query / positive / hard-negative JSONL and a BEIR validation split from an indexed collection."""
    if llm_model is not None and llm is None:
        raise ConfigError("--llm-model needs --llm URL")
    endpoint = ChatEndpoint(llm, llm_model or "", llm_key) if llm is not None else None
    options = GenerateOptions(queries_per_doc, validation_split, hard_negatives, negatives_skip, negatives_from,
                              filter_k, seed, endpoint, sentence_positive).checked()
    with open_store(db, store_url) as store:
        chosen = model or store.active_set(collection).config.model  # default: the collection's own model
        data = generate(store, encoder_for(chosen, backend, precision, False), collection, options)
    write_output(data, out)
    report = data.report.as_dict()
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        console = Console(highlight=False)
        for line in _summary(report, out):
            console.print(line, markup=False)


app.command("train")(train_command)
