"""ONNX encoders for pooled models (CLS, mean, last-token) and SPLADE learned-sparse models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

from m3search.errors import ConfigError
from m3search.lazy import Lazy
from m3search.models.encoders.base import Batch, BatchOutput, Encoder, l2_normalize
from m3search.models.prepare.cache import PreparedModel
from m3search.models.prepare.calibration import CALIBRATION_MAX_LENGTH
from m3search.models.registry import ModelSpec
from m3search.models.runtime.backends import Session
from m3search.models.runtime.sessions import RunOptions, load_session
from m3search.models.runtime.tokenize import HFTokenizer
from m3search.settings import BACKENDS, PRECISIONS, canonical_precision
from m3search.types import FloatArray, Output, SparseVector

SPLADE_BATCH_TOKENS = 1024
PER_TEXT_BATCH_TOKENS = 8192


class OnnxEncoder(Encoder):
    """Runs a prepared graph on ONNX Runtime or OpenVINO; the session is created on first use (once, under a lock).

    Args:
        backend: "onnxruntime", "openvino" or "auto" (the fastest on this machine, measured once and cached).
        precision: "fp32", "bf16", "int8-dynamic" ("int8"), or "int8-static"; every mode but ONNX Runtime fp32
            is checked against it on a held-out sample before use (:class:`~m3search.errors.FidelityError`).
        threads: intra-op threads of the session.
        options: fidelity threshold, forcing, calibration texts, caches.
    """

    precision: str
    backend: str

    def __init__(
        self,
        spec: ModelSpec,
        prepare: Callable[[], PreparedModel],
        *,
        backend: str = "onnxruntime",
        precision: str = "int8-dynamic",
        threads: int = 1,
        options: RunOptions | None = None,
        **kwargs: object,
    ) -> None:
        precision = canonical_precision(precision)
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (or int8), not {precision!r}")
        if backend not in ("auto", *BACKENDS):
            raise ConfigError(f"backend must be 'auto', 'onnxruntime' or 'openvino', not {backend!r}")
        self.backend = backend
        self.precision = precision
        self.threads = threads
        self.options = options or RunOptions()
        self._kwargs = kwargs
        super().__init__(spec, self._load_tokenizer, **kwargs)  # type: ignore[arg-type]
        self._prepared = Lazy(prepare, self._lock)
        self._session = Lazy(self._open_session, self._lock)

    @property
    def prepared(self) -> PreparedModel:
        """The prepared model (exported and quantized on first access if needed)."""
        return self._prepared.get()

    def _load_tokenizer(self) -> HFTokenizer:
        prepared = self.prepared
        return HFTokenizer(prepared.tokenizer_path, prepared.pad_id)

    def batch_budget(self) -> int:
        """Padded tokens in one call: ``batch_tokens``, SPLADE's at most 1024 (its logits are tokens x vocabulary
        floats, 30522: 125 MB). A per-text session (ONNX Runtime's dynamic INT8) runs each text by itself, unpadded,
        so its calls take at least PER_TEXT_BATCH_TOKENS: more texts per call for the sessions that run short texts
        side by side (MiniLM, sessions without spinning threads: passages 1.14x, sentences 1.06x the speed at 512)."""
        budget = min(self.batch_tokens, SPLADE_BATCH_TOKENS) if self.spec.pooling == "splade" else self.batch_tokens
        return max(budget, PER_TEXT_BATCH_TOKENS) if getattr(self.session, "per_text", False) else budget

    @property
    def pad_id(self) -> int:
        """The padding id from the manifest: padding token ids needs no tokenizer (the fidelity child has none)."""
        return self.prepared.pad_id

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The tokenizer with its ``tokenizers``-specific methods (token ids, decoding)."""
        return cast(HFTokenizer, self.tokenizer)  # always built by _load_tokenizer

    @property
    def session(self) -> Session:
        """The inference session (variant built and fidelity-checked on first use)."""
        return self._session.get()

    def _open_session(self) -> Session:
        loaded = load_session(self)
        self.backend, self.batch_tokens = loaded.backend, loaded.batch_tokens  # what "auto" chose
        return loaded.session

    def sibling(self, backend: str, precision: str, *, session: Session | None = None,
                batch_tokens: int | None = None) -> OnnxEncoder:
        """An encoder of the same model with another backend or precision (sharing the prepared files)."""
        prepared = self.prepared
        kwargs = {**self.sibling_kwargs(), **({"batch_tokens": batch_tokens} if batch_tokens else {})}
        other = type(self)(self.spec, lambda: prepared, backend=backend, precision=precision, threads=self.threads,
                           options=self.options, **kwargs)
        if session is not None:
            other._session.set(session)
        return other

    def sibling_kwargs(self) -> dict[str, object]:
        """The keyword arguments that give another encoder of this model the same tokenization and batching."""
        return {**self._kwargs, "batch_tokens": self.batch_tokens}

    def run(self, batch: Batch, output_names: list[str] | None = None) -> list[Any]:
        """Run the graph on one batch, feeding the inputs it declares; None fetches every output."""
        session = self.session
        return session.run(output_names, self._feed(batch, session.input_names))

    @staticmethod
    def _feed(batch: Batch, names: Sequence[str]) -> dict[str, Any]:
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(batch.input_ids)
        return {name: feed[name] for name in names}

    def feeds(self, texts: Sequence[str], batch_size: int = 8) -> list[dict[str, Any]]:
        """Model inputs for ``texts`` (document prefix, at most 512 tokens) in length-sorted batches: calibration."""
        names = [str(n) for n in self.prepared.manifest["inputs"]]
        limit = min(self.max_length, CALIBRATION_MAX_LENGTH)
        tokens = sorted(self.tokenizer.encode(self._prefixed(texts, "document"), limit), key=lambda t: len(t.ids))
        return [self._feed(self._pad(tokens[i : i + batch_size]), names)
                for i in range(0, len(tokens), batch_size)]

    def encode_batch(self, batch: Batch, outputs: frozenset[Output]) -> BatchOutput:
        (result,) = self.run(batch)
        if self.spec.pooling == "splade":
            return BatchOutput(sparse=[_sparse_row(row) for row in result])
        return BatchOutput(dense=self._pool(result, batch.attention_mask))

    def _pool(self, hidden: FloatArray, mask: Any) -> FloatArray:
        if self.spec.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.spec.pooling == "mean":
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        elif self.spec.pooling == "last_token":
            pooled = hidden[np.arange(hidden.shape[0]), mask.sum(axis=1) - 1]
        else:
            raise ConfigError(f"pooling '{self.spec.pooling}' is not supported by the ONNX encoder")
        pooled = np.asarray(pooled, dtype=np.float32)
        return l2_normalize(pooled) if self.spec.normalize else pooled


def _sparse_row(weights: FloatArray) -> SparseVector:
    indices = np.flatnonzero((weights > 0) | ~np.isfinite(weights))  # keep NaN so the guard sees it
    return SparseVector(indices.astype(np.int64), weights[indices].astype(np.float32))
