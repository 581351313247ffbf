"""Cross-encoder rerankers on ONNX Runtime or OpenVINO: export, lazy thread-safe sessions, batched pair scoring.

``load_reranker(name)`` is the façade (like :func:`~m3search.models.encoders.loader.load_encoder`): construction is
cheap; the files are resolved, exported to ONNX (fp32 + dynamic INT8, cached under ``M3SEARCH_HOME/onnx/NAME``) and the
session is built on the first :meth:`CrossEncoderReranker.score`, by the session factory every model kind uses
(:func:`~m3search.models.runtime.sessions.open_graph`).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from m3search._optional import require
from m3search.errors import ConfigError, InputError, M3SearchError, ModelFormatError
from m3search.lazy import Lazy
from m3search.models.files import read_config
from m3search.models.prepare.cache import PreparedModel, prepare_model
from m3search.models.prepare.export import OPSET, ExportInfo
from m3search.models.prepare.variants import ensure_variant
from m3search.models.registry import ModelSpec
from m3search.models.rerank import fidelity as rerank_fidelity
from m3search.models.rerank.registry import RerankerSpec, get_reranker
from m3search.models.resolve import resolve_model
from m3search.models.runtime.backends import Session
from m3search.models.runtime.batching import plan_batches
from m3search.models.runtime.contract import RunOptions
from m3search.models.runtime.sessions import fastest_backend, open_graph
from m3search.models.runtime.tokenize import HFTokenizer, PairTokens
from m3search.settings import BACKENDS, Settings, get_settings
from m3search.types import FloatArray

RerankPrecision = Literal["fp32", "int8-dynamic", "int8"]
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_classifier(spec: ModelSpec, src: Path, out: Path) -> ExportInfo:
    """Export a ``*ForSequenceClassification`` checkpoint with one label to ONNX: pair ids -> ``logits`` (batch,).

    Raises:
        ModelFormatError: unreadable weights, or a classifier with more than one label.
    """
    torch = require("torch", "export", "Converting a reranker to ONNX")
    transformers = require("transformers", "export", "Converting a reranker to ONNX")
    config = read_config(src)
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(src), attn_implementation="eager").eval()
    except Exception as exc:  # transformers/safetensors raise many kinds for truncated or corrupt files
        raise ModelFormatError(
            f"cannot read the reranker weights in {src} ({type(exc).__name__}: {exc}); copy the files again "
            f"or run 'm3search models pull {spec.name}'") from exc
    if int(model.config.num_labels) != 1:
        raise ModelFormatError(f"{src} is a classifier with {model.config.num_labels} labels; a reranker has one")

    class Logits(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[:, 0]

    ids = torch.tensor([[0, 5, 6, 2, 2, 7, 2], [0, 8, 2, 2, 9, 2, 1]], dtype=torch.long)
    mask = torch.tensor([[1] * 7, [1] * 6 + [0]], dtype=torch.long)
    types = torch.zeros_like(ids)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in _INPUTS}
    axes["logits"] = {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation/tracer notes (see export.py)
        torch.onnx.export(Logits().eval(), (ids, mask, types), str(out), input_names=list(_INPUTS),
                          output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          do_constant_folding=True)
    return ExportInfo(opset=OPSET, num_heads=int(config.get("num_attention_heads", 0)),
                      hidden_size=int(config.get("hidden_size", 0)), inputs=_INPUTS, outputs=("logits",))


def declared_sigmoid(directory: Path, default: bool) -> bool:
    """Whether scores get a sigmoid: the checkpoint's own ``sentence_transformers.activation_fn`` if it names
    Identity or Sigmoid (what sentence-transformers' CrossEncoder follows), else the registry's default."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        declared = str(config.get("sentence_transformers", {}).get("activation_fn", ""))
    except (OSError, ValueError, AttributeError):
        return default
    if declared.endswith(".Sigmoid"):
        return True
    if declared.endswith(".Identity"):
        return False
    return default


def position_limit(directory: Path, family: str) -> int | None:
    """The longest input the checkpoint's position table allows (XLM-R reserves two positions), if it says."""
    try:
        positions = int(json.loads((directory / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return positions - 2 if family == "xlm-roberta" else positions


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a prepared cross-encoder; thread-safe, loaded on first use.

    Args:
        spec: the reranker's registry facts.
        prepare: returns the prepared model (resolution + export happen here, once).
        precision: "fp32" or "int8-dynamic" (alias "int8"); INT8 is checked against fp32 on a held-out sample
            on first use and refused (:class:`~m3search.errors.FidelityError`) below ``fidelity_threshold`` (the
            mean per-query Spearman correlation of the rankings) unless ``force_precision``.
        threads: intra-op threads of the session.
        backend: "onnxruntime" (default), "openvino", or "auto" (the fastest installed backend whose session passes
            the fidelity check, measured once on the sample and cached in ``autotune.json`` when ``home`` is set).
            Every mode but ONNX Runtime fp32 is checked against it.
        home: where ``autotune.json`` and OpenVINO's kernel cache live (None: not cached).
        max_length: tokens per pair (default: the spec's ``default_length``).
        batch_tokens / max_batch_size: the padded-token budget and size cap of one batch.
    """

    def __init__(self, spec: RerankerSpec, prepare: Callable[[], PreparedModel], *,
                 precision: RerankPrecision = "int8-dynamic", threads: int = 1, max_length: int | None = None,
                 batch_tokens: int = 8192, max_batch_size: int = 64, fidelity_threshold: float = 0.99,
                 force_precision: bool = False, backend: str = "onnxruntime", home: Path | None = None) -> None:
        precision = "int8-dynamic" if precision == "int8" else precision
        if precision not in ("fp32", "int8-dynamic"):
            raise ConfigError(f"reranker precision must be fp32 or int8-dynamic, not {precision!r}")
        if backend not in ("auto", *BACKENDS):
            raise ConfigError(f"backend must be 'auto', 'onnxruntime' or 'openvino', not {backend!r}")
        length = max_length or spec.default_length
        if not 2 < length <= spec.max_tokens:
            raise ConfigError(f"reranker max_length must be from 3 to {spec.max_tokens}, not {length}")
        self.spec, self.precision, self.threads, self.max_length = spec, precision, threads, length
        self.batch_tokens, self.max_batch_size = batch_tokens, max_batch_size
        self.fidelity_threshold, self.force_precision = fidelity_threshold, force_precision
        self.backend = backend  # "auto" becomes the backend it chose once loaded
        self.options = RunOptions(fidelity_threshold=fidelity_threshold, force_precision=force_precision, home=home)
        self._prepare = prepare
        self._loaded = Lazy(self._open)

    @property
    def name(self) -> str:
        return self.spec.name

    def _load(self) -> tuple[PreparedModel, HFTokenizer, Session, bool]:
        return self._loaded.get()

    def _open(self) -> tuple[PreparedModel, HFTokenizer, Session, bool]:
        prepared = self._prepare()
        if "logits" not in prepared.manifest.get("outputs", []):
            raise ModelFormatError(f"{prepared.directory} is not a prepared reranker; delete it and "
                                   f"run 'm3search models prepare {self.spec.name} --force'")
        tokenizer = HFTokenizer(prepared.tokenizer_path, prepared.pad_id)
        source = Path(prepared.manifest["source"])
        self.max_length = min(self.max_length, position_limit(source, self.spec.family) or self.max_length)
        if self.backend == "auto":
            key = f"reranker/{self.spec.name}/{prepared.directory.name}/{self.precision}"
            self.backend, session = fastest_backend(key, self.threads, self.options.home,
                                                    lambda b: self._checked_session(prepared, tokenizer, b),
                                                    lambda s: self._pairs_per_s(s, tokenizer, prepared.pad_id))
        else:
            session = self._checked_session(prepared, tokenizer, self.backend)
        sigmoid = declared_sigmoid(source, self.spec.sigmoid)
        return prepared, tokenizer, session, sigmoid

    def _checked_session(self, prepared: PreparedModel, tokenizer: HFTokenizer, backend: str) -> Session:
        """The session of ``backend``/precision (its variant built on first use), fidelity-checked unless it is
        ONNX Runtime fp32."""
        path = ensure_variant(prepared, backend, self.precision, lambda: [], lambda texts: [])
        session = open_graph(backend, path, self.precision, self.threads, self.options)
        if (backend, self.precision) != ("onnxruntime", "fp32"):
            self._check_fidelity(prepared, tokenizer, session, backend)
        return session

    def _pairs_per_s(self, session: Session, tokenizer: HFTokenizer, pad_id: int) -> float:
        """Pairs per second of ``session`` over the held-out sample, after a warm-up: what "auto" compares."""
        sample = rerank_fidelity.sample()
        self._run(session, tokenizer, pad_id, *sample[0])
        start = time.perf_counter()
        pairs = sum(len(self._run(session, tokenizer, pad_id, q, p)) for q, p in sample)
        return pairs / max(time.perf_counter() - start, 1e-9)

    def _check_fidelity(self, prepared: PreparedModel, tokenizer: HFTokenizer, session: Session, backend: str) -> None:
        """Measure the session against ONNX Runtime fp32 on the held-out sample once (kept in the manifest); refuse
        it below the threshold unless forced."""
        entry = prepared.variant(backend, self.precision) or {}
        figures: dict[str, float] | None = entry.get("rerank_fidelity")
        if figures is None:
            reference = open_graph("onnxruntime", prepared.onnx_path("fp32"), "fp32", self.threads, self.options)
            figures = rerank_fidelity.measure(
                lambda s, q, p: self._run(s, tokenizer, prepared.pad_id, q, p), reference, session)
            prepared.record(backend, self.precision, {"rerank_fidelity": figures})
        mode = self.precision if backend == "onnxruntime" else f"{backend}/{self.precision}"
        rerank_fidelity.check(figures, f"reranker {self.spec.name} {mode}", self.fidelity_threshold,
                              self.force_precision)

    def load(self) -> None:
        """Resolve, export and open the session now instead of on the first score."""
        self._load()

    @property
    def sigmoid(self) -> bool:
        """Whether :meth:`score` returns ``sigmoid(logit)`` rather than the raw logit."""
        return self._load()[3]

    def logits(self, query: str, passages: Sequence[str]) -> list[float]:
        """Raw relevance logits of ``query`` against each passage, in input order."""
        if not isinstance(query, str) or not query.strip():
            raise InputError("the query to rerank is empty")
        if not passages:
            return []
        prepared, tokenizer, session, _ = self._load()
        result = self._run(session, tokenizer, prepared.pad_id, query, passages)
        if not np.isfinite(result).all():
            raise M3SearchError(f"reranker '{self.spec.name}' produced NaN/Inf scores; its files may be corrupt: "
                                f"run 'm3search models prepare {self.spec.name} --force' or use fp32")
        return [float(x) for x in result]

    def _run(self, session: Session, tokenizer: HFTokenizer, pad_id: int, query: str, passages: Sequence[str]
             ) -> FloatArray:
        pairs = tokenizer.encode_pairs(query, [str(p) for p in passages], self.max_length)
        names = set(session.input_names)
        result = np.zeros(len(pairs), dtype=np.float32)
        for batch in plan_batches([len(p.ids) for p in pairs], self.batch_tokens, self.max_batch_size):
            feed = _feed([pairs[i] for i in batch], pad_id, names, segments=self.spec.family == "bert")
            (scores,) = session.run(["logits"], feed)
            result[batch] = np.asarray(scores, dtype=np.float32).reshape(-1)
        return result

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Relevance of each passage to ``query`` (higher is better), in input order."""
        raw = self.logits(query, passages)
        if not self.sigmoid:
            return raw
        return [float(x) for x in 1.0 / (1.0 + np.exp(-np.asarray(raw, dtype=np.float64)))]


def _feed(pairs: Sequence[PairTokens], pad_id: int, names: set[str], *, segments: bool) -> dict[str, Any]:
    """Padded arrays of a batch; BERT pairs carry segment ids (0 query, 1 passage), XLM-R ones all zeros (one
    token type, as its tokenizer feeds them)."""
    width = max(len(p.ids) for p in pairs)
    ids = np.full((len(pairs), width), pad_id, dtype=np.int64)
    types = np.zeros((len(pairs), width), dtype=np.int64)
    mask = np.zeros((len(pairs), width), dtype=np.int64)
    for row, pair in enumerate(pairs):
        n = len(pair.ids)
        ids[row, :n], mask[row, :n] = pair.ids, 1
        if segments:
            types[row, :n] = pair.type_ids
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: value for name, value in feed.items() if name in names}


def load_reranker(name: str, *, path: str | Path | None = None, precision: RerankPrecision | None = None,
                  max_length: int | None = None, threads: int | None = None, backend: str = "onnxruntime",
                  settings: Settings | None = None) -> CrossEncoderReranker:
    """A lazily loading cross-encoder reranker for registry name (or repository id) ``name``.

    Files resolve like an encoder's (path -> registered -> ``M3SEARCH_HOME/models/NAME`` -> HF cache -> download);
    a missing model raises :class:`~m3search.errors.ModelNotFoundError` with the fix on the first score.

    Args:
        name: registry name or Hugging Face repository id (see ``m3search models list --rerankers``).
        path: a directory with the checkpoint (skips resolution).
        precision: "fp32" or "int8-dynamic" (default: ``M3SEARCH_RERANK_PRECISION``).
        max_length: tokens per (query, passage) pair (default: the registry's ``default_length``).
        threads: intra-op threads (default: settings).
        backend: "onnxruntime" (default), "openvino" or "auto" (see :class:`CrossEncoderReranker`).
        settings: explicit settings (default: read from the environment now).

    Raises:
        UnknownModelError: ``name`` is not a registered reranker.
    """
    cfg = settings or get_settings()
    spec = get_reranker(name)
    source = Path(path) if path is not None else None

    def prepare() -> PreparedModel:
        resolved = resolve_model(spec.weights, cfg, source)
        return prepare_model(resolved, cfg.home, exporter=export_classifier, kind="classifier",
                             builder_name=cfg.builder)

    return CrossEncoderReranker(spec, prepare, precision=precision or cfg.rerank_precision,
                                threads=threads or cfg.effective_threads(), max_length=max_length,
                                batch_tokens=cfg.batch_tokens, max_batch_size=cfg.max_batch_size,
                                fidelity_threshold=cfg.fidelity_threshold, force_precision=cfg.force_precision,
                                backend=backend, home=cfg.home)
