"""Embedding routes: OpenAI's ``/v1/embeddings``, the simple ``/embeddings``, BGE-M3's ``/api/v1/encode``, and the
model list."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from m3search.errors import InputError
from m3search.models.local import all_specs
from m3search.server.routes.common import ERRORS, json_response, service_of
from m3search.server.schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    EncodeRequest,
    EncodeResponse,
    ModelList,
    ModelOut,
    SimpleEmbedRequest,
    SimpleEmbedResponse,
)
from m3search.server.service import dense_rows
from m3search.types import Embedding, FloatArray

router = APIRouter()


def _openai_body(matrix: FloatArray, model: str, tokens: int, encoding: str, input_type: str | None = None
                 ) -> dict[str, Any]:
    if encoding == "base64":  # little-endian float32, what the openai client decodes with numpy
        vectors: list[Any] = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in matrix]
    else:
        vectors = matrix.tolist()
    body = {"object": "list", "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]}
    if input_type is not None:  # the echo tells a client that this server applied the prefix it asked for
        body["input_type"] = input_type
    return body


@router.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERRORS, tags=["embeddings"])
async def openai_embeddings(body: EmbeddingsRequest, request: Request) -> Response:
    """OpenAI-compatible embeddings; no prefix unless ``input_type`` ("query"/"document", an m3search extension)
    asks for the model's query or document prefix."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InputError("'input' is an empty list")
    if not all(isinstance(t, str) for t in texts):
        raise InputError("'input' holds token ids; send strings (token ids of another tokenizer mean nothing to "
                         "this model; with LangChain's OpenAIEmbeddings set check_embedding_ctx_length=False)")
    service = service_of(request)
    encoder = service.pool.get(body.model)
    dim = encoder.spec.check_dim(body.dimensions)
    embeddings, tokens = await service.embed(encoder, texts, outputs=["dense"], on_overflow=body.on_overflow,  # type: ignore[arg-type]
                                             kind=body.input_type, route="/v1/embeddings")
    request.state.tokens = tokens
    matrix = dense_rows(embeddings, dim, encoder.spec.normalize)
    return await run_in_threadpool(
        lambda: json_response(_openai_body(matrix, encoder.spec.name, tokens, body.encoding_format, body.input_type)))


@router.post("/embeddings", response_model=SimpleEmbedResponse, responses=ERRORS, tags=["embeddings"])
async def simple_embeddings(body: SimpleEmbedRequest, request: Request) -> Response:
    """``{"texts": [...]}`` in, ``{"embeddings": [...], "model", "dim"}`` out (the form older callers use)."""
    service = service_of(request)
    encoder = service.pool.get(body.model)
    dim = encoder.spec.check_dim(body.dimensions)
    embeddings, tokens = await service.embed(encoder, body.texts, outputs=["dense"], route="/embeddings")
    request.state.tokens = tokens
    matrix = dense_rows(embeddings, dim, body.normalize or (encoder.spec.normalize and dim != encoder.dim))
    return await run_in_threadpool(
        lambda: json_response({"embeddings": matrix.tolist(), "model": encoder.spec.name, "dim": dim}))


def _encoded(index: int, e: Embedding) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index, "tokens": e.tokens, "truncated": e.truncated}
    if e.dense is not None:
        item["dense"] = e.dense.tolist()
    if e.sparse is not None:
        item["sparse"] = {"indices": e.sparse.indices.tolist(), "values": e.sparse.values.tolist()}
    if e.colbert is not None:
        item["colbert"] = e.colbert.tolist()
    return item


@router.post("/api/v1/encode", response_model=EncodeResponse, responses=ERRORS, tags=["embeddings"])
async def encode(body: EncodeRequest, request: Request) -> Response:
    """Any of the model's outputs from one pass: dense, sparse (token id -> weight), ColBERT (one row per token)."""
    service = service_of(request)
    encoder = service.pool.get(body.model)
    outputs = list(dict.fromkeys(body.outputs))
    embeddings, tokens = await service.embed(encoder, body.texts, outputs=outputs, kind=body.kind,
                                             max_length=body.max_length, on_overflow=body.on_overflow,
                                             route="/api/v1/encode")
    request.state.tokens = tokens
    return await run_in_threadpool(lambda: json_response({
        "model": encoder.spec.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "data": [_encoded(i, e) for i, e in enumerate(embeddings)]}))


@router.get("/api/v1/models", response_model=ModelList, tags=["models"])
@router.get("/v1/models", response_model=ModelList, tags=["models"], include_in_schema=False)
async def models(request: Request) -> ModelList:
    """The registry's models and the local ones, and which ones this server has loaded."""
    loaded = service_of(request).pool.loaded()
    return ModelList(data=[ModelOut(id=s.name, dim=s.dim, max_tokens=s.max_tokens, outputs=list(s.outputs),
                                    matryoshka_dims=list(s.mrl_dims), pooling=s.pooling, license=s.license,
                                    loaded=s.name in loaded) for s in all_specs()])
