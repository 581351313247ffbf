"""Fine-tune a dense model with sentence-transformers and MultipleNegativesRankingLoss (the ``finetune`` extra).

Input: ``train.jsonl`` lines ``{"query", "positive", "negatives": [...], ...}`` (as ``m3search finetune generate``
writes them). Every query is contrasted with its positive, with the other positives of its batch (in-batch
negatives) and with its hard negatives. The base model's query / document prefixes are applied to the texts, as the
encoders apply them at search time. The result is a sentence-transformers directory (``config.json``,
``model.safetensors``, ``tokenizer.json``, ...) that m3search's ONNX exporter reads, plus ``m3search_finetune.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from m3search._optional import require
from m3search.errors import ConfigError, InputError
from m3search.finetune.examples import Example, read_examples
from m3search.models.prepare import package_version
from m3search.models.registry import ModelSpec

META_FILE = "m3search_finetune.json"
_PURPOSE = "Fine-tuning (m3search finetune train)"


@dataclass(frozen=True)
class TrainParams:
    """Training options.

    Attributes:
        epochs: passes over the training set.
        batch_size: queries per batch (each also sees the batch's other positives as negatives).
        lr: peak learning rate (linear warm-up over ``warmup_ratio`` of the steps, then linear decay).
        max_steps: stop after this many optimiser steps (None: ``epochs`` full passes).
        negatives: hard negatives used per query (missing ones are filled with other documents' positives).
        max_length: tokens per text (None: the base model's ``max_tokens``).
        seed: seed of the shuffling, the filling and the weights' dropout.
        warmup_ratio: share of the steps spent warming the learning rate up.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 2e-5
    max_steps: int | None = None
    negatives: int = 1
    max_length: int | None = None
    seed: int = 42
    warmup_ratio: float = 0.1

    def checked(self) -> TrainParams:
        """Self, or :class:`ConfigError` naming the first bad option."""
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("--epochs must be at least 1 and --batch-size at least 2 (in-batch negatives)")
        if not 0 < self.lr < 1:
            raise ConfigError(f"--lr must be between 0 and 1, not {self.lr}")
        if (self.max_steps is not None and self.max_steps < 1) or self.negatives < 0:
            raise ConfigError("--max-steps must be at least 1 and --negatives at least 0")
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError("--max-length must be at least 8 tokens")
        return self


@dataclass(frozen=True)
class TrainResult:
    """What training produced: the directory, its metadata and the loss."""

    out: Path
    examples: int
    steps: int
    seconds: float
    loss: float | None
    meta: dict[str, Any]


def training_columns(examples: list[Example], spec: ModelSpec, negatives: int, seed: int) -> dict[str, list[str]]:
    """Columns ``anchor``, ``positive``, ``negative_1..n`` with the model's prefixes applied.

    Rows with fewer than ``negatives`` hard negatives are filled with positives of other documents (random
    negatives, drawn with ``seed``), so every row has the same columns.
    """
    rng = random.Random(seed)
    columns: dict[str, list[str]] = {"anchor": [], "positive": []}
    columns.update({f"negative_{i + 1}": [] for i in range(negatives)})
    for example in examples:
        columns["anchor"].append(spec.query_prefix + example.query)
        columns["positive"].append(spec.doc_prefix + example.positive)
        chosen = list(example.negatives[:negatives])
        for _ in range(50 * negatives):
            if len(chosen) >= negatives:
                break
            other = examples[rng.randrange(len(examples))]
            if other.positive != example.positive and (not other.doc_id or other.doc_id != example.doc_id):
                chosen.append(other.positive)
        if len(chosen) < negatives:
            raise InputError("too few distinct documents to fill the negatives; lower --negatives")
        for i, text in enumerate(chosen):
            columns[f"negative_{i + 1}"].append(spec.doc_prefix + text)
    return columns


def _trainer(model: Any, columns: dict[str, list[str]], params: TrainParams, work: Path, progress: bool) -> Any:
    datasets = require("datasets", "finetune", _PURPOSE)
    st = require("sentence_transformers", "finetune", _PURPOSE)
    losses = require("sentence_transformers.sentence_transformer.losses", "finetune", _PURPOSE)
    samplers = require("sentence_transformers.sentence_transformer.training_args", "finetune", _PURPOSE)
    args = st.SentenceTransformerTrainingArguments(
        output_dir=str(work / "checkpoints"), num_train_epochs=params.epochs, max_steps=params.max_steps or -1,
        per_device_train_batch_size=params.batch_size, learning_rate=params.lr, warmup_steps=params.warmup_ratio,
        seed=params.seed, data_seed=params.seed, batch_sampler=samplers.BatchSamplers.NO_DUPLICATES,
        save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=not progress, logging_strategy="no",
    )
    loss = losses.MultipleNegativesRankingLoss(model)
    return st.SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict(columns),
                                         loss=loss)


def train(spec: ModelSpec, base_dir: Path, data: Path, out: Path, params: TrainParams, *,
          progress: bool = False, log: Callable[[str], None] | None = None) -> TrainResult:
    """Fine-tune the model in ``base_dir`` (facts ``spec``) on ``data``/train.jsonl and save it to ``out``.

    ``out`` is written through a temporary sibling directory and moved into place when complete; an existing
    ``out`` is replaced only if it holds an earlier result (its ``m3search_finetune.json``).
    """
    params = params.checked()
    if out.exists() and (not out.is_dir() or (not (out / META_FILE).is_file() and any(out.iterdir()))):
        raise ConfigError(f"{out} exists and is not an earlier fine-tuning result; choose another --out")
    examples = read_examples(data / "train.jsonl")
    st = require("sentence_transformers", "finetune", _PURPOSE)
    torch = require("torch", "finetune", _PURPOSE)
    torch.manual_seed(params.seed)
    model = st.SentenceTransformer(str(base_dir), device="cpu")
    model.max_seq_length = min(params.max_length or spec.max_tokens, spec.max_tokens)
    columns = training_columns(examples, spec, params.negatives, params.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-") as tmp:
        work = Path(tmp)
        trainer = _trainer(model, columns, params, work, progress)
        if log is not None:
            log(f"training {spec.name} on {len(examples)} examples ({params.negatives} hard negatives each)")
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout stays the caller's
            output = trainer.train()
            seconds = time.perf_counter() - start
            staged = work / "model"
            model.save(str(staged))
        meta = _meta(spec, base_dir, data, params, len(examples), int(output.global_step), seconds,
                     float(output.training_loss))
        (staged / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
    return TrainResult(out, len(examples), meta["steps"], seconds, meta["train_loss"], meta)


def _meta(spec: ModelSpec, base_dir: Path, data: Path, params: TrainParams, examples: int, steps: int,
          seconds: float, loss: float) -> dict[str, Any]:
    return {
        "base": spec.name, "base_path": str(base_dir), "data": str(data.resolve()), "examples": examples,
        "params": asdict(params), "steps": steps, "train_seconds": round(seconds, 1), "train_loss": round(loss, 4),
        "loss": "MultipleNegativesRankingLoss", "query_prefix": spec.query_prefix, "doc_prefix": spec.doc_prefix,
        "versions": {p: package_version(p) for p in ("m3search", "sentence-transformers", "transformers", "torch")},
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }

