"""The server's encoders: loaded once per (model, dimension, precision), shared by every request."""

from __future__ import annotations

import threading
from collections.abc import Callable

from m3search.models.encoders.base import Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.local import lookup_spec
from m3search.settings import PRECISIONS, Precision, Settings

# (model name, output dimension or None, precision or None) -> a lazily loading encoder.
Loader = Callable[[str, int | None, str | None], Encoder]


def settings_loader(settings: Settings) -> Loader:
    """The default loader: :func:`~m3search.models.encoders.loader.load_encoder` with the server's settings."""

    def load(name: str, dim: int | None, precision: str | None) -> Encoder:
        chosen: Precision | None = precision if precision in (*PRECISIONS, "int8") else None  # type: ignore[assignment]
        return load_encoder(name, dim=dim, precision=chosen, settings=settings)

    return load


class EncoderPool:
    """Encoders by (model, dim, precision); the default model's readiness for ``/ready``."""

    def __init__(self, loader: Loader, default_model: str) -> None:
        self.default_model = default_model
        self._loader = loader
        self._encoders: dict[tuple[str, int | None, str | None], Encoder] = {}
        self._warm: set[str] = set()
        self._names: dict[str, str] = {}  # requested name -> canonical one (a local model's lookup reads a file)
        self._lock = threading.Lock()

    def get(self, name: str | None = None, *, dim: int | None = None, precision: str | None = None) -> Encoder:
        """The encoder of ``name`` (default model if None); unknown names raise ``UnknownModelError``."""
        model = self._canonical(name)
        key = (model, dim, precision)
        with self._lock:
            if key not in self._encoders:
                self._encoders[key] = self._loader(model, dim, precision)
            return self._encoders[key]

    def _canonical(self, name: str | None) -> str:
        """The registry or local name of ``name`` (default model if None), looked up once per name."""
        requested = name or self.default_model
        found = self._names.get(requested)
        if found is None:
            found = self._names[requested] = lookup_spec(requested).name
        return found

    def warm_up(self, name: str | None = None) -> None:
        """Load the model's files and session now (one tiny encode), instead of on the first request."""
        encoder = self.get(name)
        encoder.encode(["warm up"])
        with self._lock:
            self._warm.add(encoder.spec.name)

    def is_warm(self, name: str | None = None) -> bool:
        with self._lock:
            return self._canonical(name) in self._warm

    def mark_warm(self, name: str) -> None:
        with self._lock:
            self._warm.add(name)

    def loaded(self) -> set[str]:
        """Names of models with an encoder (loaded or loading)."""
        with self._lock:
            return {key[0] for key in self._encoders}

    def close(self) -> None:
        """Drop every encoder (their sessions are freed with them)."""
        with self._lock:
            self._encoders.clear()
            self._warm.clear()
