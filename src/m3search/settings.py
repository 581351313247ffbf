"""Settings from the environment (prefix ``M3SEARCH_``, nested keys with ``__``).

Nothing is read at import time: call :func:`get_settings` where a value is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Padded tokens per inference call. Small calls keep a layer's activations in the CPU's caches between operators:
# on 2 cores, of budgets 512-8192, 512 was the fastest for BGE-M3 (1.8-2.2x the speed of 8192) and for MiniLM in
# 5 of 6 cases (the sixth, ONNX Runtime on passages: 1024 best, 512 as fast as 8192; benchmarks/results/budget.md).
# It also bounds the activations' memory. The auto-tuner tries larger budgets where it measures.
DEFAULT_BATCH_TOKENS = 512

# "int8" is an alias of "int8-dynamic" (the name used before the precision modes had variants).
Precision = Literal["fp32", "bf16", "int8-dynamic", "int8-static", "int8"]
Backend = Literal["auto", "onnxruntime", "openvino"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8-dynamic", "int8-static")
BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino")


def canonical_precision(precision: str) -> str:
    """The precision mode's canonical name ("int8" becomes "int8-dynamic")."""
    return "int8-dynamic" if precision == "int8" else precision


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("m3search", appauthor=False))


class Settings(BaseSettings):
    """Every tunable of m3search; each maps to an ``M3SEARCH_*`` variable."""

    model_config = SettingsConfigDict(env_prefix="M3SEARCH_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="where models, indexes and config live")
    default_model: str = Field("bge-m3", description="model used when none is named")
    threads: int = Field(0, ge=0, description="intra-op threads per session; 0 = all cores / sessions")
    sessions: int = Field(1, ge=1, description="inference sessions expected to run at once (e.g. server workers)")
    batch_tokens: int = Field(DEFAULT_BATCH_TOKENS, ge=1, description="token budget of one batch (padded tokens)")
    max_batch_size: int = Field(64, ge=1, description="at most this many texts in one batch")
    max_length: int | None = Field(None, ge=1, description="default max tokens per input; None = model's")
    precision: Precision = Field("int8-dynamic", description="default precision mode of encoders")
    backend: Backend = Field("auto", description="inference engine; auto = fastest measured on this machine")
    builder: Literal["auto", "torch"] = Field(
        "auto", description="how checkpoints become ONNX graphs: auto = m3search's torch-free builder where it knows "
        "the architecture, else torch; torch = always the torch exporter (the 'export' extra)")
    fidelity_threshold: float = Field(
        0.99, gt=0.0, le=1.0, description="least mean cosine to fp32 a reduced-precision mode must keep"
    )
    force_precision: bool = Field(False, description="use a precision mode even if it fails the fidelity check")
    calibration_file: Path | None = Field(
        None, description="texts (one per line) to calibrate int8-static with; default: the bundled set"
    )
    calibration_size: int = Field(300, ge=1, description="at most this many calibration texts")
    db: Path | None = Field(None, description="the index database; default: HOME/index.sqlite3")
    store: str | None = Field(
        None, description="the store URL: sqlite:///path.db, qdrant+edge:///dir or http(s)://host:6333; default: db"
    )
    qdrant_api_key: str | None = Field(None, description="API key of a Qdrant server or cluster (http(s):// stores)")
    qdrant_shards: int = Field(1, ge=1, description="shards of each new Qdrant collection (a cluster spreads them)")
    qdrant_replicas: int = Field(1, ge=1, description="copies of each shard in a Qdrant cluster (replication factor)")
    qdrant_quantization: Literal["none", "int8"] = Field(
        "none", description="int8 scalar quantization of new Qdrant collections' dense and ColBERT vectors"
    )
    ann_threshold: int = Field(
        50_000, ge=0, description="dense searches of sets this large use an HNSW graph (usearch); 0 = always exact"
    )
    offline: bool = Field(False, description="never try to download (HF_HUB_OFFLINE=1 implies it)")
    # The HTTP server (m3search serve).
    host: str = Field("127.0.0.1", description="address the server binds; loopback unless told otherwise")
    port: int = Field(8019, ge=0, le=65535, description="port the server listens on")
    api_keys: list[str] = Field(
        default_factory=list, description='JSON list of accepted API keys (Bearer); empty = no authentication'
    )
    max_request_bytes: int = Field(16_000_000, ge=1, description="largest request body; larger gets 413")
    max_header_bytes: int = Field(32_768, ge=1024, description="largest total size of request headers; more gets 431")
    max_inputs: int = Field(2048, ge=1, description="most texts in one embedding request; more gets 413")
    header_timeout: float = Field(10.0, gt=0, description="seconds a client may take to send a request's headers; "
                                  "then 408 and the connection is closed")
    body_timeout: float = Field(60.0, gt=0, description="seconds a client may take to send a request's body once "
                                "its headers are in; then 408 and the connection is closed")
    max_queue: int = Field(
        256, ge=1, description="embedding requests waiting or running at once; more gets 429 with Retry-After"
    )
    merge_tokens: int = Field(
        16384, ge=1, description="tokens of concurrent requests merged into one inference call by the batcher"
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty = CORS off")
    # Reranking (search --rerank): cross-encoders, and LLM reranking through an OpenAI-compatible chat endpoint.
    rerank_precision: Literal["fp32", "int8-dynamic", "int8"] = Field(
        "int8-dynamic", description="precision of cross-encoder rerankers"
    )
    llm_url: str | None = Field(None, description="OpenAI-compatible chat endpoint (e.g. http://127.0.0.1:11434/v1)")
    llm_model: str | None = Field(None, description="model name the LLM endpoint expects (e.g. llama3.2)")
    llm_api_key: SecretStr | None = Field(None, description="bearer token of the LLM endpoint (never logged)")
    llm_timeout: float = Field(30.0, gt=0, description="seconds an LLM call may take before it fails open")

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def models_dir(self) -> Path:
        """Models converted or registered by m3search."""
        return self.home / "models"

    @property
    def index_db(self) -> Path:
        """The SQLite index file."""
        return self.db.expanduser() if self.db is not None else self.home / "index.sqlite3"

    @property
    def is_offline(self) -> bool:
        """Offline if asked, or if the Hugging Face hub is told to be."""
        hub_flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        return self.offline or hub_flag

    def effective_threads(self) -> int:
        """Threads to give one session: the setting, else the cores shared among the expected sessions.

        Splitting the cores keeps several sessions (server workers) from oversubscribing the CPU.
        """
        return self.threads or max(1, (os.cpu_count() or 1) // self.sessions)


def get_settings(**overrides: object) -> Settings:
    """Read settings from the environment now, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
