"""``m3search models``: list, add, pull and prepare models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from m3search.cli.options import BackendOption, ForceOption, PrecisionOption, encoder_settings
from m3search.cli.rerankers import add_reranker, prepare_reranker, print_rerankers, pull_reranker
from m3search.errors import ModelFormatError
from m3search.models.encoders.loader import load_encoder
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.local import all_specs, lookup_spec, register_local, remove_local
from m3search.models.prepare.cache import prepare_model
from m3search.models.registry import ModelSpec
from m3search.models.rerank.registry import find_reranker
from m3search.models.resolve import ResolvedModel, find_local, pull, register_dir, resolve_model
from m3search.settings import Settings, get_settings

app = typer.Typer(help="List, register, download and prepare models.", no_args_is_help=True)


def _describe(spec: ModelSpec, path: Path | None, source: str | None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "dim": spec.dim,
        "max_tokens": spec.max_tokens,
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "outputs": list(spec.outputs),
        "mrl_dims": list(spec.mrl_dims),
        "query_prefix": spec.query_prefix,
        "doc_prefix": spec.doc_prefix,
        "hf_repo": spec.hf_repo,
        "revision": spec.revision,
        "license": spec.license,
        "base": spec.base or None,
        "size_gb": spec.size_gb,
        "available": path is not None or not spec.needs_weights,
        "source": source if spec.needs_weights else "built-in",
        "description": spec.description,
        "path": str(path) if path else None,
    }


def _find(spec: ModelSpec, settings: Settings) -> ResolvedModel | None:
    """The local copy of ``spec``, or None; a local model whose directory is gone shows as unavailable."""
    if not spec.needs_weights:
        return None
    try:
        return find_local(spec, settings)
    except ModelFormatError:
        if spec.base:
            return None
        raise


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    rerankers: Annotated[bool, typer.Option("--rerankers", help="list the cross-encoder rerankers instead")] = False,
) -> None:
    """List registered models (and local ones, e.g. fine-tuned) and whether each is available offline."""
    if rerankers:
        print_rerankers(as_json)
        return
    settings = get_settings()
    rows = []
    for spec in all_specs(settings):
        found = _find(spec, settings)
        rows.append(_describe(spec, found.path if found else None, found.source if found else None))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("model", "dim", "max tokens", "pooling", "outputs", "MRL dims", "available", "licence", "base")
    for row in rows:
        table.add_row(
            row["name"], str(row["dim"]), str(row["max_tokens"]), row["pooling"], "+".join(row["outputs"]),
            "/".join(str(d) for d in row["mrl_dims"]) or "-",
            f"yes ({row['source']})" if row["available"] else "no", row["license"], row["base"] or "-",
        )
    Console().print(table)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="registry name of the model (or a new name, with --base)")],
    path: Annotated[Path, typer.Argument(help="directory with config.json, tokenizer.json and weights")],
    base: Annotated[str | None, typer.Option(
        "--base", help="register a local model under a NEW name, derived from this registry model (e.g. a "
                       "fine-tuned copy): same pooling, prefixes and max tokens")] = None,
) -> None:
    """Use model files you already have (e.g. copied from a machine with internet access, or fine-tuned)."""
    if base is not None:
        model = register_local(name, base, path, settings=get_settings())
        typer.echo(f"registered local model {model.name} (base {model.base}) -> {model.path}")
        return
    if find_reranker(name) is not None:  # a cross-encoder's files
        typer.echo(add_reranker(name, path))
        return
    resolved = register_dir(get_settings(), name, path)
    typer.echo(f"registered {resolved.spec.name} -> {resolved.path}")


@app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="name of a local model")]) -> None:
    """Forget a local model (registered with --base or by 'finetune train'); its files are kept."""
    model = remove_local(name, get_settings())
    typer.echo(f"removed local model {model.name} (files kept in {model.path})")


@app.command("pull")
def pull_model(name: Annotated[str, typer.Argument(help="registry name of the model")]) -> None:
    """Download the model's pinned revision from the Hugging Face hub into M3SEARCH_HOME."""
    if find_reranker(name) is not None:
        typer.echo(pull_reranker(name))
        return
    settings = get_settings()
    resolved = pull(lookup_spec(name, settings), settings)
    typer.echo(f"downloaded {resolved.spec.name} -> {resolved.path}")


@app.command("prepare")
def prepare(
    name: Annotated[str, typer.Argument(help="registry name of the model")],
    model_path: Annotated[
        Path | None, typer.Option("--model-path", help="use this directory instead of resolving")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even if a prepared copy exists")] = False,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    force_precision: ForceOption = False,
) -> None:
    """Convert the model to ONNX once (fp32 and INT8); with --backend/--precision also build and check that mode."""
    if find_reranker(name) is not None:  # a cross-encoder: exported as pair -> logit, fp32 and INT8
        typer.echo("\n".join(prepare_reranker(name, model_path, force)))
        return
    settings, options = encoder_settings(backend, precision, force_precision)
    spec = lookup_spec(name, settings)
    if not spec.needs_weights:
        typer.echo(f"{spec.name} needs no preparation")
        return
    prepared = prepare_model(resolve_model(spec, settings, model_path), settings.home, force=force,
                             builder_name=settings.builder)
    if backend is not None or precision is not None:
        encoder = load_encoder(spec.name, path=prepared.manifest["source"], **options)
        if isinstance(encoder, OnnxEncoder):
            _ = encoder.session  # builds the variant, checks its fidelity (and measures, for auto)
            prepared = encoder.prepared  # its manifest now lists the variant just built
            typer.echo(f"ready: {encoder.backend}/{encoder.precision}")
    for key, variant in prepared.manifest["variants"].items():
        size = variant["bytes"] / 1e6
        figures = variant.get("fidelity") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if k.endswith(("_mean", "_overlap")))
        typer.echo(f"{key}: {prepared.directory / variant['file']} ({size:.1f} MB){'; ' + shown if shown else ''}")
