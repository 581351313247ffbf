"""Embedding configurations (a model with its validated Matryoshka choices) and embedding sets (a collection's
vectors of one configuration; a new set for an existing collection is filled in the background and swapped in)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Path, Request, Response

from m3search.errors import DimensionError, InputError, NotFoundError, StoreError
from m3search.ingest.pipeline import chunk_sizes, config_for, default_outputs
from m3search.ingest.reembed import embed_pending, reembed
from m3search.models.local import lookup_spec
from m3search.server.jobs import Progress
from m3search.server.routes.common import ERRORS, service_of
from m3search.server.schemas import (
    AutoEmbedRules,
    EmbeddingSetIn,
    EmbeddingSetOut,
    JobOut,
    NamedConfigIn,
    NamedConfigOut,
)
from m3search.server.service import Service
from m3search.store.status import set_status
from m3search.store.types import EmbeddingSet
from m3search.types import Output

router = APIRouter(prefix="/api/v1", tags=["embedding sets"], responses=ERRORS)
SET_ID = Path(ge=1, le=2**63 - 1, description="an embedding set's id")  # SQLite integers are 64-bit
JOB_BATCH = 64  # chunks per background batch: small enough that interactive requests interleave


def validate_config(body: NamedConfigIn) -> NamedConfigOut:
    """The configuration with its defaults filled in, or :class:`DimensionError` saying what the model allows."""
    spec = lookup_spec(body.model)
    trained = list(spec.mrl_dims)
    supports = bool(trained) if body.supports_mrl is None else body.supports_mrl
    if supports and not trained:
        raise DimensionError(f"model '{spec.name}' is not Matryoshka-trained: supports_mrl must be false "
                             f"(truncating its {spec.dim}-d vectors would lose quality)")
    if not supports and body.matryoshka_dims:
        raise DimensionError("matryoshka_dims needs supports_mrl=true")
    dims = (trained if body.matryoshka_dims is None else sorted(set(body.matryoshka_dims), reverse=True)) if supports \
        else []
    for dim in dims:
        spec.check_dim(dim)
    default = body.default_truncate_dim
    if default is not None and default not in dims:
        raise DimensionError(f"default_truncate_dim={default} must be one of matryoshka_dims "
                             f"({', '.join(map(str, dims)) or 'none: supports_mrl is false'})")
    return NamedConfigOut(id=body.id, model=spec.name, dim=spec.dim, supports_mrl=supports, matryoshka_dims=dims,
                          default_truncate_dim=default, precision=body.precision, description=body.description)


def _config(service: Service, config_id: str) -> NamedConfigOut:
    found = service.store.named_config(config_id)
    if found is None:
        raise NotFoundError(f"no embedding config '{config_id}'; create it with POST /api/v1/embedding-configs")
    return NamedConfigOut(**found)


@router.get("/embedding-configs", response_model=list[NamedConfigOut])
def list_configs(request: Request) -> list[NamedConfigOut]:
    return [NamedConfigOut(**c) for c in service_of(request).store.named_configs()]


@router.post("/embedding-configs", response_model=NamedConfigOut, status_code=201)
def create_config(body: NamedConfigIn, request: Request) -> NamedConfigOut:
    config = validate_config(body)
    store = service_of(request).store
    if store.named_config(config.id) is not None:
        raise StoreError(f"embedding config '{config.id}' exists; change it with PUT")
    store.put_named_config(config.id, config.model_dump())
    return config


@router.get("/embedding-configs/{config_id}", response_model=NamedConfigOut)
def get_config(config_id: str, request: Request) -> NamedConfigOut:
    return _config(service_of(request), config_id)


@router.put("/embedding-configs/{config_id}", response_model=NamedConfigOut)
def put_config(config_id: str, body: NamedConfigIn, request: Request, response: Response) -> NamedConfigOut:
    """Create or replace (sets made from the old version keep their vectors and fingerprints)."""
    if body.id != config_id:
        raise InputError(f"id {body.id!r} differs from the id in the path ({config_id!r}); send the same one")
    config = validate_config(body)
    if service_of(request).store.put_named_config(config_id, config.model_dump()):
        response.status_code = 201
    return config


@router.delete("/embedding-configs/{config_id}", status_code=204)
def delete_config(config_id: str, request: Request) -> Response:
    service = service_of(request)
    users = [s.id for s in _all_sets(service) if service.store.set_options(s.id).get("embedding_config_id")
             == config_id and s.status != "retired"]
    if users:
        raise StoreError(f"embedding config '{config_id}' is used by set(s) {', '.join(map(str, users))}")
    if not service.store.delete_named_config(config_id):
        raise NotFoundError(f"no embedding config '{config_id}'")
    return Response(status_code=204)


def _all_sets(service: Service) -> list[EmbeddingSet]:
    return [s for name in service.store.collections() for s in service.store.sets(name)]


def set_out(service: Service, set_id: int) -> EmbeddingSetOut:
    job = service.jobs.state(set_id)  # first: a job seen done has already swapped its set in
    job = replace(job) if job else None  # one moment's copy (the job's thread keeps updating its own)
    target = _set(service, set_id)
    status = set_status(service.store, target, service.store.counts(target.collection)[1])
    options = service.store.set_options(target.id)
    return EmbeddingSetOut(
        **{k: status[k] for k in ("id", "collection", "status", "model", "fingerprint", "dim", "truncate_dim",
                                  "outputs", "vectors", "progress")},
        name=options.get("name"), embedding_config_id=options.get("embedding_config_id"),
        auto_embed_rules=AutoEmbedRules(**options.get("auto_embed_rules", {})),
        job=JobOut(state=job.state, embedded=job.embedded, total=job.total, error=job.error) if job else None,
    )


def start_fill(service: Service, target: EmbeddingSet) -> None:
    """Embed ``target``'s pending chunks in the background; a building set is then swapped in atomically."""
    encoder = service.encoder_for_set(target)
    embed = service.embed_fn(encoder, wait=True)
    outputs: list[Output] = list(target.config.outputs)  # type: ignore[arg-type]

    def work(progress: Progress) -> None:
        if target.status == "building":
            reembed(service.store, encoder, target.collection, outputs=outputs, batch=JOB_BATCH, progress=progress,
                    embed=embed)
        else:
            embed_pending(service.store, encoder, target, outputs, batch=JOB_BATCH, progress=progress, embed=embed)

    service.jobs.start(target.id, work)


@router.get("/embedding-sets", response_model=list[EmbeddingSetOut])
def list_sets(request: Request, collection: str | None = None) -> list[EmbeddingSetOut]:
    service = service_of(request)
    sets = service.store.sets(collection) if collection else _all_sets(service)
    return [set_out(service, s.id) for s in sets]


@router.get("/embedding-sets/{set_id}", response_model=EmbeddingSetOut)
def get_set(request: Request, set_id: int = SET_ID) -> EmbeddingSetOut:
    service = service_of(request)
    return set_out(service, set_id)


def _set(service: Service, set_id: int) -> EmbeddingSet:
    found = service.store.embedding_set(set_id)
    if found is None:
        raise NotFoundError(f"no embedding set {set_id}")
    return found


@router.post("/embedding-sets", response_model=EmbeddingSetOut, status_code=201)
def create_set(body: EmbeddingSetIn, request: Request, response: Response) -> EmbeddingSetOut:
    """A new collection with this configuration (201), or a new set for an existing collection, filled in the
    background while searches keep using the active set, then swapped in (202; progress in GET)."""
    service = service_of(request)
    named = _config(service, body.embedding_config_id)
    truncate = body.truncate_dim if body.truncate_dim is not None else named.default_truncate_dim
    if truncate is not None and truncate not in named.matryoshka_dims:
        raise DimensionError(f"truncate_dim={truncate} is not one of config '{named.id}''s matryoshka_dims "
                             f"({', '.join(map(str, named.matryoshka_dims)) or 'none: the model is not Matryoshka'})")
    encoder = service.pool.get(named.model, dim=None if truncate == named.dim else truncate, precision=named.precision)
    if body.colbert and "colbert" not in encoder.spec.outputs:
        raise InputError(f"model '{named.model}' has no ColBERT output")
    outputs: list[Output] = [*default_outputs(encoder), *(["colbert"] if body.colbert else [])]  # type: ignore[list-item]
    config = config_for(encoder, outputs)
    options: dict[str, Any] = {"name": body.name, "embedding_config_id": named.id, "origin": "api",
                               "auto_embed_rules": body.auto_embed_rules.model_dump()}
    store = service.store
    if body.collection not in store.collections():
        chunk_tokens, overlap = chunk_sizes(encoder, min(body.chunk_tokens or encoder.max_length,
                                                         encoder.max_length), None)
        target = store.create_collection(body.collection, config, chunk_tokens, overlap)
        store.put_set_options(target.id, options)
        return set_out(service, target.id)
    target = store.start_set(body.collection, config)
    store.put_set_options(target.id, options)
    accepted = set_out(service, target.id)  # as accepted: a small fill may finish before this reply is written
    start_fill(service, target)
    response.status_code = 202
    return accepted


@router.post("/embedding-sets/{set_id}/embed", response_model=EmbeddingSetOut, status_code=202)
def embed_set(request: Request, set_id: int = SET_ID) -> EmbeddingSetOut:
    """Embed the set's pending chunks now (documents stored while its auto-embed rules were off)."""
    service = service_of(request)
    target = _set(service, set_id)
    if target.status == "retired":
        raise StoreError(f"set {set_id} is retired")
    start_fill(service, target)
    return set_out(service, target.id)
