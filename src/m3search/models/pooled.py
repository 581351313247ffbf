"""ONNX encoders for pooled models (CLS, mean, last-token) and SPLADE learned-sparse models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from m3search.errors import ConfigError
from m3search.models.encoder import Batch, BatchOutput, Encoder, l2_normalize
from m3search.models.onnx import build_session
from m3search.models.prepare import PreparedModel
from m3search.models.registry import ModelSpec
from m3search.models.tokenize import HFTokenizer
from m3search.settings import Precision
from m3search.types import FloatArray, Output, SparseVector


class OnnxEncoder(Encoder):
    """Runs a prepared ONNX graph; the session is created on first use (once, under a lock)."""

    def __init__(
        self,
        spec: ModelSpec,
        prepare: Callable[[], PreparedModel],
        *,
        precision: Precision = "int8",
        threads: int = 1,
        **kwargs: object,
    ) -> None:
        if precision not in ("int8", "fp32"):
            raise ConfigError(f"precision must be 'int8' or 'fp32', not {precision!r}")
        self.precision: Precision = precision
        self.threads = threads
        self._prepare = prepare
        self._prepared: PreparedModel | None = None
        self._session: Any = None
        self._input_names: list[str] = []
        super().__init__(spec, self._load_tokenizer, **kwargs)  # type: ignore[arg-type]

    @property
    def prepared(self) -> PreparedModel:
        """The prepared model (exported and quantized on first access if needed)."""
        if self._prepared is None:
            with self._lock:
                if self._prepared is None:
                    self._prepared = self._prepare()
        return self._prepared

    def _load_tokenizer(self) -> HFTokenizer:
        prepared = self.prepared
        return HFTokenizer(prepared.tokenizer_path, prepared.pad_id)

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The tokenizer with its ``tokenizers``-specific methods (token ids, decoding)."""
        return cast(HFTokenizer, self.tokenizer)  # always built by _load_tokenizer

    @property
    def session(self) -> Any:
        """The ONNX Runtime session."""
        if self._session is None:
            prepared = self.prepared
            with self._lock:
                if self._session is None:
                    session = build_session(prepared.onnx_path(self.precision), self.threads)
                    self._input_names = [i.name for i in session.get_inputs()]
                    self._session = session
        return self._session

    def run(self, batch: Batch, output_names: list[str] | None = None) -> list[Any]:
        """Run the graph on one batch, feeding the inputs it declares; None fetches every output."""
        session = self.session
        feed = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(batch.input_ids)
        result: list[Any] = session.run(output_names, {name: feed[name] for name in self._input_names})
        return result

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
