"""Every request and response body of the HTTP API (they make the OpenAPI schema at ``/openapi.json``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from m3search.limits import (
    MAX_CANDIDATES,
    MAX_DOCUMENTS_PER_REQUEST,
    MAX_K,
    MAX_NEGATIVES,
    MAX_QUERIES_PER_DOC,
    MAX_QUERY_CHARS,
    MAX_RERANK_K,
)
from m3search.retrieval.types import Strategy
from m3search.validation import check_json, check_tree

OutputName = Literal["dense", "sparse", "colbert"]
Slug = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Strict(BaseModel):
    """A part of a request body: unknown fields are a 400 naming them (a typo never drops a value silently), and
    floats are finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RequestBody(Strict):
    """Every request body: before any field is read, each string and key anywhere in it is checked (no lone
    surrogate, no NUL) and its nesting is bounded (:func:`m3search.validation.check_tree`)."""

    @model_validator(mode="before")
    @classmethod
    def _safe_strings(cls, data: Any) -> Any:
        return check_tree("", data)


# A JSON object a user stores or filters with: bounded depth, items and size (:data:`m3search.validation.METADATA`).
JsonObject = Annotated[dict[str, Any], AfterValidator(lambda value: check_json("metadata", value))]
Filters = Annotated[dict[str, Any], AfterValidator(lambda value: check_json("filters", value))]


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error, on every route: ``{"error": {"message", "type", "code"}}`` (OpenAI's format)."""

    error: ErrorDetail


# /v1/embeddings (OpenAI) ---------------------------------------------------------------------------


class EmbeddingsRequest(RequestBody):
    """OpenAI's embeddings request. ``input`` token arrays are refused: token ids of another tokenizer (tiktoken)
    mean nothing to these models."""

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


class SimpleEmbedRequest(RequestBody):
    texts: list[str] = Field(min_length=1)
    model: str | None = None
    normalize: bool = Field(True, description="L2-normalise (models that normalise return unit vectors anyway)")
    dimensions: int | None = None


class SimpleEmbedResponse(BaseModel):
    embeddings: list[list[float]]
    model: str
    dim: int


class EncodeRequest(RequestBody):
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


class NamedConfigIn(RequestBody):
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


class AutoEmbedRules(Strict):
    on_create: bool = Field(True, description="embed documents when they are created")
    on_update: bool = Field(True, description="re-embed documents when their content changes")


class EmbeddingSetIn(RequestBody):
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


class DocumentIn(Strict):
    id: str = Field(min_length=1, max_length=512)
    text: str = Field(min_length=1)
    title: str = Field("", max_length=2000)
    metadata: JsonObject = Field(default_factory=dict)


class DocumentsIn(RequestBody):
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCUMENTS_PER_REQUEST)


class DocumentUpdate(RequestBody):
    id: str | None = Field(None, description="if given, the id in the path (a mismatch is a 400)")
    text: str = Field(min_length=1)
    title: str = Field("", max_length=2000)
    metadata: JsonObject = Field(default_factory=dict)


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


class SearchBody(RequestBody):
    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    collection: str
    strategy: Strategy = "hybrid"
    k: int = Field(10, ge=1, le=MAX_K)
    filters: Filters | None = None
    rrf_k: int | None = Field(None, ge=0, description="hybrid's RRF constant (default: the collection's, else 60)")
    fusion: Literal["max", "rrf", "dbsf", "minmax"] | None = Field(
        None, description="how hybrid fuses: weighted scores (max, dbsf, minmax) or ranks (rrf); default: the "
                          "collection's saved setting (eval --tune), else the built-in default")
    weights: dict[str, float] | None = None
    candidates: int = Field(100, ge=1, le=MAX_CANDIDATES)
    coarse_dim: int | None = None
    coarse_k: int = Field(100, ge=1, le=MAX_CANDIDATES)
    rerank: str | None = Field(None, description="a cross-encoder's name, or 'llm' (the server's chat endpoint)")
    rerank_k: int = Field(50, ge=1, le=MAX_RERANK_K, description="first-stage candidates the reranker reorders (>= k)")
    group_by: Literal["document", "chunk"] = Field(
        "document", description="document: one hit per document (its best chunk, the other matching chunks listed), "
                                "k documents; chunk: every matching chunk, k chunks")


class ContributionOut(BaseModel):
    rank: int | None = Field(description="None in 'rerank' when the rerank failed open")
    score: float | None
    by: str | None = Field(None, description="'rerank' only: the reranker")
    status: Literal["ok", "failed-open"] | None = Field(None, description="'rerank' only")
    reason: str | None = Field(None, description="'rerank' only: why it failed open")


class ChunkMatchOut(BaseModel):
    chunk_id: int
    ordinal: int | None = Field(description="the chunk's place in its document (0 = first)")
    start: int | None = Field(description="character offset of the chunk in its document")
    end: int | None
    score: float


class SearchHitOut(BaseModel):
    document_id: str
    chunk_id: int
    score: float
    text: str
    metadata: dict[str, Any]
    breakdown: dict[str, ContributionOut]
    ordinal: int | None = Field(None, description="the chunk's place in its document (0 = first)")
    start: int | None = Field(None, description="character offset of the chunk in its document")
    end: int | None = None
    other_chunks: list[ChunkMatchOut] | None = Field(
        None, description="group_by=document: the document's other matching chunks, best first")


class SearchResponse(BaseModel):
    model_config = ConfigDict(extra="allow")  # the strategy's parameters (rrf_k, candidates, ...)

    collection: str
    strategy: str
    retrievers: list[str]
    took_ms: float
    k: int
    hits: list[SearchHitOut]


class LLMEndpointIn(Strict):
    """LLM generation through the server's own endpoint (``M3SEARCH_LLM_URL``): a client never names a URL the
    server would call."""

    model: str | None = Field(None, min_length=1, description="the endpoint's model (default: M3SEARCH_LLM_MODEL)")


class FineTuneGenerateIn(RequestBody):
    collection: str
    queries_per_doc: int = Field(4, ge=1, le=MAX_QUERIES_PER_DOC)
    validation_split: float = Field(0.1, ge=0, lt=1, description="share of documents held out for validation")
    hard_negatives: int = Field(3, ge=0, le=MAX_NEGATIVES)
    negatives_skip: int = Field(2, ge=0, le=MAX_NEGATIVES, description="top documents skipped when mining negatives")
    negatives_strategy: Literal["dense", "hybrid"] = "hybrid"
    filter_k: int = Field(10, ge=1, le=MAX_K)
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


class ImageSearchBody(RequestBody):
    image: str = Field(min_length=1, description="the query image, base64-encoded file bytes (a data: URL is accepted)")
    collection: str = Field(description="an image collection (built with an image model such as clip-vit-b-32)")
    k: int = Field(10, ge=1, le=MAX_K)
    filters: Filters | None = None
