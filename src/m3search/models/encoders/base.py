"""The encoder base: prefixes, truncation, length-sorted token-budget batching, checks, typed results.

Subclasses implement one method, :meth:`Encoder.encode_batch`, over a padded batch of token ids.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from m3search.errors import ConfigError, InputError, InputTooLongError, NonFiniteEmbeddingError
from m3search.lazy import Lazy
from m3search.models.registry import ModelSpec
from m3search.models.runtime.batching import plan_batches
from m3search.models.runtime.tokenize import TextTokenizer, Tokens
from m3search.settings import DEFAULT_BATCH_TOKENS
from m3search.types import Embedding, FloatArray, IntArray, OnOverflow, Output, SparseVector

if TYPE_CHECKING:
    from m3search.models.encoders.images import ImageInput

Kind = Literal["query", "document"]


@dataclass(frozen=True)
class Batch:
    """Right-padded token ids of one batch and their attention mask (both int64, shape B x T)."""

    input_ids: IntArray
    attention_mask: IntArray


@dataclass(frozen=True)
class BatchOutput:
    """Per-row outputs of one batch; each field is None unless requested."""

    dense: FloatArray | None = None
    sparse: list[SparseVector] | None = None
    colbert: list[FloatArray] | None = None


class Encoder(ABC):
    """Turns texts into embeddings; thread-safe, loads its model on first use.

    Declared capabilities (read them as plain attributes; subclasses that have them set them):

    - ``precision``: the precision mode the model runs in ("fp32", "int8-dynamic", ...); None for an encoder with
      no such modes (the hash encoder, a test fake).
    - ``backend``: the inference engine ("onnxruntime", "openvino"; "auto" until the first session is built);
      None for an encoder without one.
    - ``embeds_images``: whether :meth:`encode_images` embeds images (CLIP's vision tower); False for text-only
      encoders, whose :meth:`encode_images` refuses.
    """

    precision: str | None = None
    backend: str | None = None
    embeds_images: ClassVar[bool] = False

    def __init__(
        self,
        spec: ModelSpec,
        tokenizer_loader: Callable[[], TextTokenizer],
        *,
        dim: int | None = None,
        max_length: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_batch_size: int = 64,
    ) -> None:
        self.spec = spec
        self.dim = spec.check_dim(dim)
        self.max_length = self._check_length(max_length)
        self.batch_tokens = batch_tokens
        self.max_batch_size = max_batch_size
        self._lock = threading.RLock()  # re-entrant: loading the tokenizer may prepare the model
        self._tokenizer = Lazy(tokenizer_loader, self._lock)

    @abstractmethod
    def encode_batch(self, batch: Batch, outputs: frozenset[Output]) -> BatchOutput:
        """Compute the requested outputs of one padded batch (dense vectors at the model's full dim)."""

    def encode_images(self, items: Sequence[ImageInput], *, names: Sequence[str] | None = None
                      ) -> list[Embedding]:
        """One vector per image, for encoders that embed images (``embeds_images``); text-only ones refuse.

        Raises:
            ConfigError: this model embeds text only.
        """
        raise ConfigError(f"model '{self.spec.name}' embeds text only; images need an image model (CLIP), e.g. "
                          f"clip-vit-b-32")

    @property
    def tokenizer(self) -> TextTokenizer:
        """The tokenizer, loaded once even when first used from several threads."""
        return self._tokenizer.get()

    def encode_queries(self, texts: Sequence[str], **kwargs: object) -> list[Embedding]:
        """Encode search queries (the model's query prefix is applied)."""
        return self.encode(texts, kind="query", **kwargs)  # type: ignore[arg-type]

    def encode_documents(self, texts: Sequence[str], **kwargs: object) -> list[Embedding]:
        """Encode documents (the model's document prefix is applied)."""
        return self.encode(texts, kind="document", **kwargs)  # type: ignore[arg-type]

    def encode(
        self,
        texts: Sequence[str],
        *,
        kind: Kind | None = None,
        outputs: Iterable[Output] | None = None,
        max_length: int | None = None,
        on_overflow: OnOverflow = "truncate",
    ) -> list[Embedding]:
        """Encode ``texts`` and return one :class:`Embedding` per text, in input order.

        Args:
            texts: the input texts.
            kind: "query" or "document" selects the model's prefix; None applies none.
            outputs: which outputs to compute (default: the model's first, e.g. dense).
            max_length: tokens per input, special tokens included (default: the encoder's, else the
                model's max_tokens). Never a hidden library default.
            on_overflow: "truncate" cuts longer inputs and reports it; "error" raises InputTooLongError.
        """
        wanted = self.check_outputs(outputs)
        return self.encode_tokens(self.tokenize(texts, kind=kind, max_length=max_length, on_overflow=on_overflow),
                                  wanted)

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        kind: Kind | None = None,
        max_length: int | None = None,
        on_overflow: OnOverflow = "truncate",
    ) -> list[Tokens]:
        """The first half of :meth:`encode`: validate, prefix and tokenize ``texts`` (same arguments).

        A server tokenizes in its request threads (counting tokens, refusing long inputs early) and merges the
        token lists of concurrent requests into one :meth:`encode_tokens` call.
        """
        limit = self._check_length(max_length) if max_length is not None else self.max_length
        if on_overflow not in ("truncate", "error"):
            raise ConfigError(f"on_overflow must be 'truncate' or 'error', not {on_overflow!r}")
        prefixed = self._prefixed(texts, kind)
        if not prefixed:
            return []
        tokens = self.tokenizer.encode(prefixed, limit)
        if on_overflow == "error":
            for index, tok in enumerate(tokens):
                if tok.truncated:
                    raise InputTooLongError(index, tok.original_length, limit)
        return tokens

    def encode_tokens(self, tokens: Sequence[Tokens], outputs: Iterable[Output] | None = None) -> list[Embedding]:
        """The second half of :meth:`encode`: token-budget batches, inference, results in input order."""
        wanted = self.check_outputs(outputs)
        results: list[Embedding | None] = [None] * len(tokens)
        for indices in plan_batches([len(t.ids) for t in tokens], self.batch_budget(), self.max_batch_size):
            out = self.encode_batch(self._pad([tokens[i] for i in indices]), wanted)
            for row, index in enumerate(indices):
                results[index] = self._result(out, row, index, tokens[index])
        return [r for r in results if r is not None]

    def encode_iter(self, texts: Iterable[str], *, window: int = 1024, **kwargs: object) -> Iterator[Embedding]:
        """Stream embeddings for a long iterable, sorting and batching ``window`` texts at a time."""
        iterator = iter(texts)
        while chunk := list(islice(iterator, window)):
            yield from self.encode(chunk, **kwargs)  # type: ignore[arg-type]

    def _prefixed(self, texts: Sequence[str], kind: Kind | None) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InputError("texts must be a list of strings, not a single string or other type")
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise InputError(f"input {bad} is a {type(texts[bad]).__name__}, not a string")
        prefix = {"query": self.spec.query_prefix, "document": self.spec.doc_prefix, None: ""}.get(kind)
        if prefix is None:
            raise ConfigError(f"kind must be 'query', 'document' or None, not {kind!r}")
        return [prefix + t for t in texts] if prefix else list(texts)

    def check_outputs(self, outputs: Iterable[Output] | None) -> frozenset[Output]:
        """The requested outputs (default: the model's first), or ConfigError naming what the model produces."""
        wanted = frozenset(outputs) if outputs is not None else frozenset(self.spec.outputs[:1])
        unsupported = sorted(wanted - set(self.spec.outputs))
        if unsupported or not wanted:
            raise ConfigError(
                f"model '{self.spec.name}' produces {', '.join(self.spec.outputs)}; "
                f"cannot produce {', '.join(unsupported) or 'nothing'}"
            )
        return wanted

    def _check_length(self, max_length: int | None) -> int:
        if max_length is None:
            return self.spec.max_tokens
        if not 1 <= max_length <= self.spec.max_tokens:
            raise ConfigError(
                f"max_length must be between 1 and {self.spec.max_tokens} for '{self.spec.name}', "
                f"not {max_length}"
            )
        return max_length

    def batch_budget(self) -> int:
        """Padded tokens in one batch (``batch_tokens``; a model with large per-token outputs may ask for fewer)."""
        return self.batch_tokens

    @property
    def pad_id(self) -> int:
        """The token id that pads batches."""
        return self.tokenizer.pad_id

    def _pad(self, tokens: list[Tokens]) -> Batch:
        width = max(len(t.ids) for t in tokens)
        ids = np.full((len(tokens), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(tokens), width), dtype=np.int64)
        for row, tok in enumerate(tokens):
            ids[row, : len(tok.ids)] = tok.ids
            mask[row, : len(tok.ids)] = 1
        return Batch(ids, mask)

    def _result(self, out: BatchOutput, row: int, index: int, tok: Tokens) -> Embedding:
        dense = None
        if out.dense is not None:
            dense = out.dense[row, : self.dim]
            if self.dim != out.dense.shape[1] and self.spec.normalize:
                dense = dense / max(float(np.linalg.norm(dense)), 1e-12)
            dense = np.ascontiguousarray(dense, dtype=np.float32)
        sparse = out.sparse[row] if out.sparse is not None else None
        colbert = out.colbert[row] if out.colbert is not None else None
        for array in (dense, None if sparse is None else sparse.values, colbert):
            if array is not None and not np.isfinite(array).all():
                raise NonFiniteEmbeddingError(index, self.spec.name)
        return Embedding(tokens=len(tok.ids), truncated=tok.truncated, dense=dense, sparse=sparse, colbert=colbert)


def l2_normalize(matrix: FloatArray) -> FloatArray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    result: FloatArray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return result


def stack_dense(embeddings: Sequence[Embedding]) -> FloatArray:
    """The dense vectors of ``embeddings`` as one (N, dim) float32 matrix."""
    if any(e.dense is None for e in embeddings):
        raise ConfigError("some embeddings have no dense vector (was 'dense' requested?)")
    return np.stack([e.dense for e in embeddings if e.dense is not None]).astype(np.float32, copy=False)
