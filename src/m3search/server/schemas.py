"""Every request and response body of the HTTP API (they make the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from m3search.retrieval.types import Strategy

OutputName = Literal["dense", "sparse", "colbert"]
Slug = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error, on every route: ``{"error": {"message", "type", "code"}}`` (OpenAI's format)."""

    error: ErrorDetail


# /v1/embeddings (OpenAI) ---------------------------------------------------------------------------


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request. ``input`` token arrays are refused: token ids of another tokenizer (tiktoken)
    mean nothing to these models."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = Field(None, description="registry name (default: the server's model)")
    dimensions: int | None = Field(None, description="one of the model's Matryoshka dimensions")
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None
    on_overflow: Literal["truncate", "error"] = Field(
        "truncate", description="inputs longer than the model's max tokens: cut them, or answer 413"
    )
    input_type: Literal["query", "document"] | None = Field(
        None, description="m3search extension: apply the model's query or document prefix (default: none)"
    )


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage
    input_type: Literal["query", "document"] | None = Field(None, description="echoed when the request set it")


# /embeddings (simple) and /api/v1/encode (BGE-M3's three outputs) -------------------------------------


class SimpleEmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1)
    model: str | None = None
    normalize: bool = Field(True, description="L2-normalise (models that normalise return unit vectors anyway)")
    dimensions: int | None = None


class SimpleEmbedResponse(BaseModel):
    embeddings: list[list[float]]
    model: str
    dim: int


class EncodeRequest(BaseModel):
    texts: list[str] = Field(min_length=1)
    outputs: list[OutputName] = Field(default=["dense"], min_length=1)
    model: str | None = None
    kind: Literal["query", "document"] | None = Field(None, description="applies the model's query/doc prefix")
    max_length: int | None = Field(None, ge=1)
    on_overflow: Literal["truncate", "error"] = "truncate"


class SparseOut(BaseModel):
    indices: list[int]
    values: list[float]


class EncodedOut(BaseModel):
    index: int
    tokens: int
    truncated: bool
    dense: list[float] | None = None
    sparse: SparseOut | None = None
    colbert: list[list[float]] | None = None


class EncodeResponse(BaseModel):
    model: str
    data: list[EncodedOut]
    usage: Usage


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    dim: int
    max_tokens: int
    outputs: list[str]
    matryoshka_dims: list[int]
    pooling: str
    license: str
    loaded: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


# embedding configs and sets --------------------------------------------------------------------------


class NamedConfigIn(BaseModel):
    """A model with its Matryoshka choices; validated against the registry's facts."""

    id: str = Slug
    model: str
    supports_mrl: bool | None = Field(None, description="default: whether the model was trained for Matryoshka")
    matryoshka_dims: list[int] | None = Field(None, description="subset of the model's Matryoshka dims")
    default_truncate_dim: int | None = None
    precision: Literal["fp32", "bf16", "int8-dynamic", "int8-static", "int8"] | None = None
    description: str = ""


class NamedConfigOut(BaseModel):
    id: str
    model: str
    dim: int
    supports_mrl: bool
    matryoshka_dims: list[int]
    default_truncate_dim: int | None
    precision: str | None
    description: str


class AutoEmbedRules(BaseModel):
    on_create: bool = Field(True, description="embed documents when they are created")
    on_update: bool = Field(True, description="re-embed documents when their content changes")


class EmbeddingSetIn(BaseModel):
    collection: str = Slug
    embedding_config_id: str
    truncate_dim: int | None = Field(None, description="default: the config's default_truncate_dim")
    auto_embed_rules: AutoEmbedRules = AutoEmbedRules(on_create=True, on_update=True)
    name: str | None = Field(None, max_length=200)
    chunk_tokens: int | None = Field(None, ge=8, description="new collections only")
    colbert: bool = Field(False, description="also store ColBERT vectors (BGE-M3)")


class JobOut(BaseModel):
    state: Literal["running", "done", "failed", "stopped"]
    embedded: int
    total: int
    error: str | None = None


class EmbeddingSetOut(BaseModel):
    id: int
    collection: str
    name: str | None
    embedding_config_id: str | None
    status: str
    model: str
    fingerprint: str
    dim: int
    truncate_dim: int | None
    outputs: list[str]
    vectors: int
    progress: float
    auto_embed_rules: AutoEmbedRules
    job: JobOut | None = None


# collections and documents ---------------------------------------------------------------------------


class DocumentIn(BaseModel):
    id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)
    title: str = Field("", max_length=2000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsIn(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class DocumentUpdate(BaseModel):
    text: str = Field(min_length=1)
    title: str = Field("", max_length=2000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsWritten(BaseModel):
    collection: str
    added: int
    updated: int
    unchanged: int
    chunks: int
    embedded: bool = Field(description="False when the set's auto-embed rules left the vectors pending")
    pending: int


class DocumentOut(BaseModel):
    id: str
    title: str
    source: str
    metadata: dict[str, Any]
    content_hash: str
    created: str
    updated: str
    chunks: int


class DocumentList(BaseModel):
    collection: str
    documents: list[DocumentOut]
    total: int


class CollectionOut(BaseModel):
    collection: str
    documents: int
    chunks: int
    model: str
    fingerprint: str
    pending: int
    sets: list[dict[str, Any]]


# search ----------------------------------------------------------------------------------------------


class SearchBody(BaseModel):
    q: str = Field(min_length=1, max_length=10_000)
    collection: str
    strategy: Strategy = "hybrid"
    k: int = Field(10, ge=1, le=1000)
    filters: dict[str, Any] | None = None
    rrf_k: int | None = Field(None, ge=0, description="hybrid's RRF constant (default: the collection's, else 60)")
    fusion: Literal["max", "rrf", "dbsf", "minmax"] | None = Field(
        None, description="how hybrid fuses: weighted scores (max, dbsf, minmax) or ranks (rrf); default: the "
                          "collection's saved setting (eval --tune), else the built-in default")
    weights: dict[str, float] | None = None
    candidates: int = Field(100, ge=1, le=10_000)
    coarse_dim: int | None = None
    coarse_k: int = Field(100, ge=1, le=10_000)
    rerank: str | None = Field(None, description="a cross-encoder's name, or 'llm' (the server's chat endpoint)")
    rerank_k: int = Field(50, ge=1, le=1000, description="first-stage candidates the reranker reorders (>= k)")


class ContributionOut(BaseModel):
    rank: int | None = Field(description="None in 'rerank' when the rerank failed open")
    score: float | None
    by: str | None = Field(None, description="'rerank' only: the reranker")
    status: Literal["ok", "failed-open"] | None = Field(None, description="'rerank' only")
    reason: str | None = Field(None, description="'rerank' only: why it failed open")


class SearchHitOut(BaseModel):
    document_id: str
    chunk_id: int
    score: float
    text: str
    metadata: dict[str, Any]
    breakdown: dict[str, ContributionOut]


class SearchResponse(BaseModel):
    model_config = ConfigDict(extra="allow")  # the strategy's parameters (rrf_k, candidates, ...)

    collection: str
    strategy: str
    retrievers: list[str]
    took_ms: float
    k: int
    hits: list[SearchHitOut]


class LLMEndpointIn(BaseModel):
    """LLM generation through the server's own endpoint (``M3SEARCH_LLM_URL``): a client never names a URL the
    server would call."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, min_length=1, description="the endpoint's model (default: M3SEARCH_LLM_MODEL)")


class FineTuneGenerateIn(BaseModel):
    collection: str
    queries_per_doc: int = Field(4, ge=1, le=100)
    validation_split: float = Field(0.1, ge=0, lt=1, description="share of documents held out for validation")
    hard_negatives: int = Field(3, ge=0, le=100)
    negatives_skip: int = Field(2, ge=0, le=100, description="top documents skipped when mining negatives")
    negatives_strategy: Literal["dense", "hybrid"] = "hybrid"
    filter_k: int = Field(10, ge=1, le=1000)
    seed: int = 0
    sentence_positive: Literal["chunk", "rest"] = Field(
        "chunk", description="a key sentence's positive: its chunk, or the chunk without it (inverse cloze task)")
    llm: LLMEndpointIn | None = Field(None, description="generate queries with the server's chat endpoint "
                                      "(M3SEARCH_LLM_URL; default: offline)")


class FineTuneJobOut(BaseModel):
    id: str
    state: Literal["running", "done", "failed", "stopped"]
    processed: int = Field(description="queries searched (filter and negatives) so far")
    total: int = Field(description="queries to search (known once generation is done; 0 before)")
    error: str | None = None
    output_dir: str
    report: dict[str, Any] | None = Field(None, description="the report.json of a finished job")


class ImageSearchBody(BaseModel):
    image: str = Field(min_length=1, description="the query image, base64-encoded file bytes (a data: URL is accepted)")
    collection: str = Field(description="an image collection (built with an image model such as clip-vit-b-32)")
    k: int = Field(10, ge=1, le=1000)
    filters: dict[str, Any] | None = None
