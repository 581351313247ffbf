"""Collections and their documents: create, update, delete, list; embedded on write per the active set's rules."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from m3search.errors import DocumentError, NotFoundError
from m3search.ingest.pipeline import IndexReport, plan_index, prepare_documents, write_prepared
from m3search.ingest.sources import DEFAULT_MAX_BYTES, check_text
from m3search.limits import MAX_PAGE
from m3search.server.routes.common import ERRORS, service_of
from m3search.server.schemas import (
    AutoEmbedRules,
    CollectionOut,
    DocumentIn,
    DocumentList,
    DocumentOut,
    DocumentsIn,
    DocumentsWritten,
    DocumentUpdate,
)
from m3search.server.service import Service
from m3search.store.status import collection_status
from m3search.store.types import Document

BATCH_DOCS = 32  # documents per transaction, as the CLI writes them
router = APIRouter(prefix="/api/v1/collections", tags=["collections"], responses=ERRORS)


@router.get("", response_model=list[CollectionOut])
def list_collections(request: Request) -> list[CollectionOut]:
    store = service_of(request).store
    return [CollectionOut(**collection_status(store, name)) for name in store.collections()]


@router.get("/{name}", response_model=CollectionOut)
def get_collection(name: str, request: Request) -> CollectionOut:
    return CollectionOut(**collection_status(service_of(request).store, name))


@router.delete("/{name}", status_code=204)
def delete_collection(name: str, request: Request) -> Response:
    service_of(request).store.delete_collection(name)
    return Response(status_code=204)


def _documents(items: list[DocumentIn]) -> list[Document]:
    seen: set[str] = set()
    docs = []
    for index, item in enumerate(items):
        where = f"documents[{index}] ({item.id!r})"
        if item.id in seen:
            raise DocumentError(where, "duplicate id in this request")
        if item.id != item.id.strip() or any(ord(c) < 32 for c in item.id):
            raise DocumentError(where, "ids have no leading/trailing spaces or control characters")
        seen.add(item.id)
        text = check_text(where, item.text.encode("utf-8", "surrogatepass"), DEFAULT_MAX_BYTES)
        docs.append(Document(item.id, text, "api", item.title, item.metadata))
    return docs


def write(service: Service, name: str, docs: list[Document]) -> DocumentsWritten:
    """Index ``docs``: new ones embedded if the rules say on_create, changed ones if on_update, others pending."""
    store = service.store
    active = store.active_set(name)
    rules = AutoEmbedRules(**store.set_options(active.id).get("auto_embed_rules", {}))
    encoder = service.encoder_for_set(active)
    plan = plan_index(store, encoder, name, docs, outputs=active.config.outputs)  # type: ignore[arg-type]
    report = IndexReport(unchanged=len(docs) - len(plan.todo))
    embed = service.embed_fn(encoder, wait=False)
    now = [(rules.on_create if d.doc_id not in plan.known else rules.on_update) for d in plan.todo]
    for vectors in (True, False):
        chosen = [d for d, flag in zip(plan.todo, now, strict=True) if flag is vectors]
        for offset in range(0, len(chosen), BATCH_DOCS):
            prepared = prepare_documents(encoder, chosen[offset : offset + BATCH_DOCS], plan.outputs,
                                         plan.chunk_tokens, plan.overlap, vectors=vectors, embed=embed)
            write_prepared(store, plan, prepared, report)
    return DocumentsWritten(collection=name, added=report.added, updated=report.updated, unchanged=report.unchanged,
                            chunks=report.chunks, embedded=all(now), pending=store.pending_count(active))


@router.post("/{name}/documents", response_model=DocumentsWritten)
def add_documents(name: str, body: DocumentsIn, request: Request) -> DocumentsWritten:
    """Create or replace documents (unchanged ones are skipped); one transaction per batch of 32."""
    service = service_of(request)
    service.store.active_set(name)  # 404 before any work
    return write(service, name, _documents(body.documents))


@router.put("/{name}/documents/{doc_id:path}", response_model=DocumentsWritten)
def put_document(name: str, doc_id: str, body: DocumentUpdate, request: Request) -> DocumentsWritten:
    """Replace one document (ids may hold '/', as the CLI makes them from subfolders: ``sub%2Fdir%2Ffile.md``)."""
    if body.id is not None and body.id != doc_id:
        raise DocumentError(f"id {body.id!r}", f"differs from the id in the path ({doc_id!r}); a PUT replaces the "
                            "document its path names: omit 'id' or send the same one")
    service = service_of(request)
    service.store.active_set(name)
    item = DocumentIn(id=doc_id, text=body.text, title=body.title, metadata=body.metadata)
    return write(service, name, _documents([item]))


@router.get("/{name}/documents", response_model=DocumentList)
def list_documents(name: str, request: Request, limit: int = Query(100, ge=1, le=MAX_PAGE),
                   offset: int = Query(0, ge=0)) -> DocumentList:
    store = service_of(request).store
    total, _ = store.counts(name)
    store.collection_settings(name)  # 404 for an unknown collection
    return DocumentList(collection=name, total=total,
                        documents=[DocumentOut(**d) for d in store.documents(name, limit, offset)])


@router.get("/{name}/documents/{doc_id:path}", response_model=DocumentOut)
def get_document(name: str, doc_id: str, request: Request) -> DocumentOut:
    store = service_of(request).store
    store.collection_settings(name)
    found = store.documents(name, 1, 0, doc_id=doc_id)
    if not found:
        raise NotFoundError(f"no document '{doc_id}' in collection '{name}'")
    return DocumentOut(**found[0])


@router.delete("/{name}/documents/{doc_id:path}", status_code=204)
def delete_document(name: str, doc_id: str, request: Request) -> Response:
    if service_of(request).store.delete_documents(name, [doc_id]) == 0:
        raise NotFoundError(f"no document '{doc_id}' in collection '{name}'")
    return Response(status_code=204)
