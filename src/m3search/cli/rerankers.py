"""Rerankers in ``m3search models``: ``list --rerankers``, and ``add``/``pull``/``prepare`` of a reranker's name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from m3search.errors import ConfigError
from m3search.models.prepare.cache import prepare_model, write_json
from m3search.models.rerank.cross_encoder import export_classifier
from m3search.models.rerank.registry import RerankerSpec, get_reranker, list_rerankers
from m3search.models.resolve import find_local, pull, registered_dirs, resolve_model
from m3search.settings import get_settings


def describe(spec: RerankerSpec, path: Path | None, source: str | None) -> dict[str, Any]:
    """One reranker's facts and whether it is available offline."""
    return {
        "name": spec.name, "kind": "reranker", "architecture": spec.architecture, "max_tokens": spec.max_tokens,
        "default_length": spec.default_length, "sigmoid": spec.sigmoid, "hf_repo": spec.hf_repo,
        "revision": spec.revision, "license": spec.license, "size_gb": spec.size_gb,
        "available": path is not None, "source": source, "path": str(path) if path else None,
        "description": spec.description,
    }


def print_rerankers(as_json: bool) -> None:
    """The reranker registry as a table (or JSON), with where each one's files are."""
    settings = get_settings()
    rows = []
    for spec in list_rerankers():
        found = find_local(spec.weights, settings)
        rows.append(describe(spec, found.path if found else None, found.source if found else None))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("reranker", "architecture", "max tokens", "score", "available", "licence")
    for row in rows:
        table.add_row(row["name"], row["architecture"], str(row["max_tokens"]),
                      "sigmoid" if row["sigmoid"] else "logit",
                      f"yes ({row['source']})" if row["available"] else "no", row["license"])
    Console().print(table)


def pull_reranker(name: str) -> str:
    """Download a reranker's pinned revision; returns the line to print."""
    resolved = pull(get_reranker(name).weights, get_settings())
    return f"downloaded {resolved.spec.name} -> {resolved.path}"


def prepare_reranker(name: str, model_path: Path | None, force: bool) -> list[str]:
    """Export a reranker to ONNX (fp32 + INT8) once; returns the lines to print."""
    settings = get_settings()
    resolved = resolve_model(get_reranker(name).weights, settings, model_path)
    prepared = prepare_model(resolved, settings.home, force=force, exporter=export_classifier, kind="classifier",
                             builder_name=settings.builder)
    return [f"{key}: {prepared.directory / v['file']} ({v['bytes'] / 1e6:.1f} MB)"
            for key, v in prepared.manifest["variants"].items()]


def add_reranker(name: str, path: Path) -> str:
    """Remember ``path`` as the files of reranker ``name`` (``models add``); returns the line to print."""
    spec = get_reranker(name)
    settings = get_settings()
    checked = find_local(spec.weights, settings, path)  # an explicit path: validated, never looked up elsewhere
    assert checked is not None
    directory = checked.path
    entries = registered_dirs(settings)
    entries[spec.name] = str(directory)
    target = settings.home / "models.json"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json(target, dict(entries))
    except OSError as exc:
        raise ConfigError(f"cannot write {target} ({exc}); set M3SEARCH_HOME to a writable directory") from exc
    return f"registered {spec.name} -> {directory}"
