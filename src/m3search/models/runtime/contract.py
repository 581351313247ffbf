"""What the runtime needs of an encoder, and what it hands back: the runtime never imports the encoders.

:class:`~m3search.models.encoders.pooled.OnnxEncoder` satisfies :class:`SessionOwner`; :func:`.sessions.load_session`
returns a :class:`LoadedSession` that the encoder applies to itself (the loader changes nothing of its caller).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from m3search.models.prepare.cache import PreparedModel
from m3search.models.registry import ModelSpec
from m3search.models.runtime.backends import Session
from m3search.models.runtime.tokenize import Tokens
from m3search.types import Embedding, Output


@dataclass(frozen=True)
class RunOptions:
    """How encoders pick, build and check their precision variants (from :class:`~m3search.settings.Settings`)."""

    fidelity_threshold: float = 0.99
    force_precision: bool = False
    calibration_file: Path | None = None
    calibration_size: int = 300
    spinning: bool = True  # False when several sessions share the cores
    home: Path | None = None  # where autotune.json and OpenVINO's kernel cache live; None: not cached

    @property
    def openvino_cache(self) -> Path | None:
        """Where OpenVINO keeps compiled kernels across processes (None: not cached)."""
        return self.home / "openvino-cache" if self.home is not None else None


@dataclass(frozen=True)
class LoadedSession:
    """A ready session and the backend and token budget it runs with ("auto" resolved to what it chose)."""

    session: Session
    backend: str
    batch_tokens: int


class SessionOwner(Protocol):
    """What the session loader and the fp32 reference read of an ONNX encoder."""

    spec: ModelSpec
    backend: str
    precision: str
    threads: int
    batch_tokens: int
    max_length: int
    options: RunOptions

    @property
    def prepared(self) -> PreparedModel: ...

    @property
    def session(self) -> Session: ...

    def feeds(self, texts: Sequence[str], batch_size: int = 8) -> list[dict[str, Any]]: ...

    def sibling(self, backend: str, precision: str, *, session: Session | None = None,
                batch_tokens: int | None = None) -> SessionOwner: ...

    def sibling_kwargs(self) -> dict[str, object]: ...

    def encode(self, texts: Sequence[str], *, outputs: Iterable[Output] | None = None) -> list[Embedding]: ...

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]: ...
