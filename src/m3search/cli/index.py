"""``m3search index / delete / reembed / status / gc``: the store from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from m3search.cli import exits
from m3search.cli.images import explain_images, index_image_files, print_report, wants_images
from m3search.cli.options import BackendOption, ForceOption, PrecisionOption, encoder_settings
from m3search.errors import InputError
from m3search.ingest.distributed import RayOptions, index_documents_ray
from m3search.ingest.pipeline import default_outputs, index_documents
from m3search.ingest.reembed import reembed as run_reembed
from m3search.ingest.sources import DEFAULT_MAX_BYTES, read_sources
from m3search.models.encoders.base import Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.local import lookup_spec
from m3search.settings import PRECISIONS, get_settings
from m3search.store.base import CatalogStore, Store
from m3search.store.status import collection_status
from m3search.store.types import EmbeddingSet
from m3search.store.urls import configured_store
from m3search.types import Output

DbOption = Annotated[Path | None, typer.Option("--db", help="index database (default: M3SEARCH_HOME/index.sqlite3)")]
CollectionOption = Annotated[str, typer.Option("--collection", "-c", help="collection name")]
ModelOption = Annotated[str | None, typer.Option("--model", "-m", help="model (default: M3SEARCH_DEFAULT_MODEL)")]


StoreOption = Annotated[str | None, typer.Option(
    "--store", help="store URL: sqlite:///path.db, qdrant+edge:///dir, http(s)://host:6333 (default: M3SEARCH_STORE, "
                    "else --db)")]


def open_store(db: Path | None, url: str | None = None) -> CatalogStore:
    return configured_store(get_settings(), db=db, url=url)


def encoder_for(model: str | None, backend: str | None, precision: str | None, force: bool,
                dim: int | None = None) -> Encoder:
    _, options = encoder_settings(backend, precision, force)
    return load_encoder(model, dim=dim, **options)


def collection_encoder(store: Store, collection: str, model: str | None, backend: str | None, precision: str | None,
                       force: bool) -> tuple[Encoder, EmbeddingSet | None]:
    """The encoder for a command on ``collection``, and its active set (None for a new collection).

    An existing collection's own model, precision and Matryoshka dimension are the defaults: ``--model`` left out
    (or naming the collection's model) and ``--precision`` left out give the encoder that made its vectors, not
    M3SEARCH_DEFAULT_MODEL and M3SEARCH_PRECISION."""
    active = store.active_set(collection) if collection in store.collections() else None
    dim = None
    if active is not None and (model is None or lookup_spec(model).name == active.config.model):
        model, dim = active.config.model, active.config.truncate_dim
        if precision is None and active.config.quantization in PRECISIONS:
            precision = active.config.quantization
    return encoder_for(model, backend, precision, force, dim), active


def _progress(console: Console, label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False)


def index(
    paths: Annotated[list[Path], typer.Argument(
        help="files or directories (.txt, .md, .jsonl; images with an image model such as clip-vit-b-32)")],
    collection: CollectionOption,
    model: ModelOption = None,
    db: DbOption = None,
    store_url: StoreOption = None,
    chunk_tokens: Annotated[int | None, typer.Option("--chunk-tokens", help="tokens per chunk")] = None,
    overlap: Annotated[int | None, typer.Option("--overlap", help="tokens shared by neighbouring chunks")] = None,
    max_bytes: Annotated[int, typer.Option("--max-bytes", help="skip documents larger than this")] = DEFAULT_MAX_BYTES,
    colbert: Annotated[bool, typer.Option("--colbert", help="also store ColBERT vectors (BGE-M3)")] = False,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    force_precision: ForceOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    ray: Annotated[bool, typer.Option(
        "--ray", help="chunk and embed on a Ray actor pool: a local Ray on 127.0.0.1, started and stopped here "
                      "(extra 'ray')")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="join this Ray cluster instead (host:port or ray://host:port); implies --ray")] = None,
    ray_actors: Annotated[int, typer.Option("--ray-actors", help="encoders (actors) in the pool")] = 1,
    ray_threads: Annotated[int, typer.Option("--ray-threads", help="inference threads (and CPUs) per actor")] = 1,
) -> None:
    """Index documents: unchanged ones are skipped, changed ones re-embedded; exit 1 if any were skipped.

    An existing collection is indexed with its own model, precision and outputs unless --model says otherwise."""
    if wants_images(model):  # an image model (CLIP): image files into an image collection
        index_image_files(paths, collection, model=model, db=db, store_url=store_url, max_bytes=max_bytes,
                          backend=backend, precision=precision, force_precision=force_precision, as_json=as_json)
        return
    console = Console(stderr=True)
    sources = explain_images(read_sources(paths, max_bytes=max_bytes))
    if not sources.documents:  # nothing usable: no store is opened, no collection created
        for problem in sources.problems:
            typer.echo(f"skipped {problem.source}: {problem.reason}")
        raise InputError(f"no documents to index in {', '.join(map(str, paths))} "
                         f"({len(sources.problems)} skipped, listed above)")
    with open_store(db, store_url) as store, _progress(console, "indexing") as bar:
        encoder, active = collection_encoder(store, collection, model, backend, precision, force_precision)
        outputs = index_outputs(encoder, active, colbert)
        task = bar.add_task("docs", total=len(sources.documents), rate="")
        state = {"chunks": 0}

        def advance(docs: int, chunks: int) -> None:
            state["chunks"] += chunks
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, advance=docs, rate=f"{state['chunks']} chunks, {state['chunks'] / elapsed:.1f}/s")

        if not ray and ray_address is None:
            report = index_documents(store, encoder, collection, sources.documents, outputs=outputs,
                                     chunk_tokens=chunk_tokens, overlap=overlap, progress=advance)
        else:
            options = RayOptions(ray_address, ray_actors, ray_threads)
            report = index_documents_ray(store, encoder, collection, sources.documents, options=options,
                                         outputs=outputs, chunk_tokens=chunk_tokens, overlap=overlap,
                                         progress=advance)
    report.problems = sources.problems
    print_report(report, f"{collection}: {report.added} added, {report.updated} updated, {report.unchanged} "
                         f"unchanged, {report.chunks} chunks embedded ({report.truncated} truncated) in "
                         f"{report.seconds:.1f} s", as_json)


def index_outputs(encoder: Encoder, active: EmbeddingSet | None, colbert: bool) -> list[Output]:
    """What to embed: the model's default outputs (plus ColBERT with --colbert), or an existing collection's own
    outputs when its model is the one indexing."""
    if active is not None and not colbert and active.config.model == encoder.spec.name:
        return [o for o in encoder.spec.outputs if o in active.config.outputs]
    return [*default_outputs(encoder), *(["colbert"] if colbert else [])]  # type: ignore[list-item]


def delete(
    doc_ids: Annotated[list[str], typer.Argument(help="document ids")],
    collection: CollectionOption,
    db: DbOption = None,
    store_url: StoreOption = None,
) -> None:
    """Delete documents (with their chunks and vectors in every set); exit 1 naming the ids that were not stored."""
    with open_store(db, store_url) as store:
        store.active_set(collection)  # CollectionNotFoundError (exit 2) for an unknown collection
        stored = store.content_hashes(collection)
        missing = list(dict.fromkeys(i for i in doc_ids if i not in stored))
        removed = store.delete_documents(collection, doc_ids)
    typer.echo(f"{collection}: deleted {removed} of {len(doc_ids)} documents")
    for doc_id in missing:
        typer.echo(f"not found {doc_id}: no such document in {collection}")
    if missing:
        raise typer.Exit(exits.PARTIAL)


def reembed(
    collection: CollectionOption,
    model: ModelOption = None,
    db: DbOption = None,
    store_url: StoreOption = None,
    drop_old: Annotated[bool, typer.Option("--drop-old", help="delete the retired set's vectors afterwards")] = False,
    colbert: Annotated[bool, typer.Option("--colbert", help="also store ColBERT vectors (BGE-M3)")] = False,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    force_precision: ForceOption = False,
) -> None:
    """Switch a collection to another model (or precision, or dimension, or outputs) without downtime; resumable."""
    console = Console(stderr=True)
    encoder = encoder_for(model, backend, precision, force_precision)
    outputs = index_outputs(encoder, None, colbert)
    with open_store(db, store_url) as store, _progress(console, "re-embedding") as bar:
        task = bar.add_task("chunks", total=None, rate="")

        def advance(done: int, total: int) -> None:
            elapsed = bar.tasks[task].elapsed or 1e-9
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:.1f} chunks/s")

        report = run_reembed(store, encoder, collection, outputs=outputs, progress=advance)
        dropped = store.gc(collection) if drop_old else 0
    typer.echo(f"{collection}: {report.embedded} chunks embedded ({report.truncated} truncated by the new model), "
               f"now active: fingerprint {report.fingerprint}"
               + (f"; dropped {dropped} retired set(s)" if dropped else "; the old set is retired (m3search gc)"))


def gc(collection: CollectionOption, db: DbOption = None, store_url: StoreOption = None) -> None:
    """Drop retired embedding sets and their vectors."""
    with open_store(db, store_url) as store:
        typer.echo(f"{collection}: dropped {store.gc(collection)} retired set(s)")


def status(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="one collection")] = None,
    db: DbOption = None,
    store_url: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """Collections, their documents, chunks, model fingerprint and embedding sets."""
    with open_store(db, store_url) as store:
        names = [collection] if collection else store.collections()
        rows = [collection_status(store, n) for n in names]
    if as_json:
        typer.echo(json.dumps(rows[0] if collection else rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['collection']}: {row['documents']} documents, {row['chunks']} chunks, model "
                   f"{row['model']} ({row['fingerprint']}), pending {row['pending']}")
        for s in row["sets"]:
            typer.echo(f"  set {s['id']} {s['status']}: {s['model']} {s['quantization']} {s['dim']}-d, "
                       f"{s['vectors']} vectors ({100 * s['progress']:.0f}%)")
