"""``m3search embed``: embed texts from arguments or standard input."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from m3search.cli.options import BackendOption, ForceOption, PrecisionOption, encoder_settings
from m3search.errors import InputError
from m3search.models.encoders.base import Kind
from m3search.models.encoders.loader import load_encoder
from m3search.types import Embedding, OnOverflow, Output


def _texts(args: list[str] | None) -> list[str]:
    """The texts: the arguments (each non-empty, as over HTTP), else the non-empty lines of standard input."""
    if args:
        for index, text in enumerate(args):
            if not text.strip():
                raise InputError(f"input {index} is empty or whitespace only")
        return args
    if sys.stdin.isatty():
        raise InputError("give texts as arguments or one per line on standard input")
    try:
        lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        for line in lines:
            line.encode("utf-8")  # a C locale reads stdin with surrogate escapes: refuse those too
    except UnicodeError:
        raise InputError("standard input is not valid UTF-8 text") from None
    return lines


def _line(emb: Embedding) -> str:
    record: dict[str, object] = {"tokens": emb.tokens, "truncated": emb.truncated}
    if emb.dense is not None:
        record["dense"] = [round(float(x), 7) for x in emb.dense]
    if emb.sparse is not None:
        record["sparse"] = {str(k): round(v, 7) for k, v in emb.sparse.to_dict().items()}
    if emb.colbert is not None:
        record["colbert"] = [[round(float(x), 6) for x in row] for row in emb.colbert]
    return json.dumps(record)


def _outputs(sparse: bool, colbert: bool, dense: bool) -> list[Output]:
    flags: tuple[tuple[Output, bool], ...] = (("dense", dense), ("sparse", sparse), ("colbert", colbert))
    chosen = [output for output, on in flags if on]
    if not chosen:
        raise InputError("nothing to compute: keep --dense or add --sparse / --colbert")
    return chosen


def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="texts to embed (default: lines of stdin)")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="registry name or HF repo id")] = None,
    model_path: Annotated[Path | None, typer.Option("--model-path", help="model directory to use")] = None,
    query: Annotated[bool, typer.Option("--query", help="encode as search queries (query prefix)")] = False,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    force_precision: ForceOption = False,
    dim: Annotated[int | None, typer.Option("--dim", help="Matryoshka dimension to truncate to")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help="tokens per input")] = None,
    on_overflow: Annotated[
        str, typer.Option("--on-overflow", help="'truncate' or 'error' for inputs over max length")
    ] = "truncate",
    sparse: Annotated[bool, typer.Option("--sparse", help="add lexical weights (token id -> weight)")] = False,
    colbert: Annotated[bool, typer.Option("--colbert", help="add ColBERT vectors (one per token)")] = False,
    dense: Annotated[bool, typer.Option("--dense/--no-dense", help="include the dense vector")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per input line")] = False,
) -> None:
    """Embed texts and print their vectors."""
    _, options = encoder_settings(backend, precision, force_precision)
    encoder = load_encoder(model, path=model_path, dim=dim, **options)
    kind: Kind = "query" if query else "document"
    if on_overflow not in ("truncate", "error"):
        raise InputError(f"--on-overflow must be 'truncate' or 'error', not {on_overflow!r}")
    overflow: OnOverflow = "error" if on_overflow == "error" else "truncate"
    outputs = _outputs(sparse, colbert, dense)
    results = encoder.encode(_texts(texts), kind=kind, outputs=outputs, max_length=max_length, on_overflow=overflow)
    for emb in results:
        typer.echo(_line(emb) if as_json else _summary(emb))


def _summary(emb: Embedding) -> str:
    parts = [f"{emb.tokens} tokens" + (", truncated" if emb.truncated else "")]
    if emb.dense is not None:
        parts.append(f"dense {emb.dense.shape[0]}-d " + " ".join(f"{x:+.4f}" for x in emb.dense[:4]) + " ...")
    if emb.sparse is not None:
        top = sorted(emb.sparse.to_dict().items(), key=lambda kv: -kv[1])[:4]
        parts.append(f"sparse {len(emb.sparse)} tokens, top " + ", ".join(f"{k}:{v:.3f}" for k, v in top))
    if emb.colbert is not None:
        parts.append(f"colbert {emb.colbert.shape[0]} x {emb.colbert.shape[1]}")
    return " | ".join(parts)
