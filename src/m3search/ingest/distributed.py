"""Distributed ingestion on Ray Data (extra ``ray``): documents -> an actor pool that chunks and embeds (one encoder,
so one inference session, per actor, with its threads set explicitly) -> the driver writes to the store in batches.

Without an address a local Ray is started that listens on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``:
a plain ``ray.init()`` binds every interface on Linux) in a fresh temporary directory, and is shut down at the end.
With an address (``ray://`` or ``host:port``, CLI ``--ray-address``) the driver joins that cluster and leaves it
running. Every node needs the model's files under its ``M3SEARCH_HOME`` (``m3search models add``/``pull`` there).
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3search._optional import require
from m3search.errors import ConfigError
from m3search.ingest.pipeline import IndexReport, prepare_documents, start_index, write_prepared
from m3search.models.encoders.base import Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.settings import get_settings
from m3search.store.base import Store
from m3search.store.types import Document
from m3search.types import Output

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass(frozen=True)
class EncoderRecipe:
    """How an actor rebuilds the driver's encoder (same model, dimension, precision, backend; its own threads)."""

    model: str
    dim: int | None
    precision: str | None
    backend: str | None
    max_length: int
    home: str

    @staticmethod
    def of(encoder: Encoder, home: Path) -> EncoderRecipe:
        dim = encoder.dim if encoder.dim != encoder.spec.dim else None
        return EncoderRecipe(encoder.spec.name, dim, encoder.precision,
                             encoder.backend, encoder.max_length, str(home))

    def load(self, threads: int) -> Encoder:
        return load_encoder(self.model, dim=self.dim, precision=self.precision, backend=self.backend,  # type: ignore[arg-type]
                            max_length=self.max_length, threads=threads, settings=get_settings(home=self.home))


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``address`` None starts a local Ray; ``actors`` encoders with ``threads`` each."""

    address: str | None = None
    actors: int = 1
    threads: int = 1
    batch_docs: int = 32

    def check(self) -> RayOptions:
        if self.actors < 1 or self.threads < 1 or self.batch_docs < 1:
            raise ConfigError("--ray-actors, --ray-threads and the batch size must be at least 1")
        return self


class Embedder:
    """The actor: one encoder for its lifetime; each call chunks and embeds a batch of documents."""

    def __init__(self, recipe: EncoderRecipe, threads: int, outputs: tuple[Output, ...], chunk_tokens: int,
                 overlap: int) -> None:
        self.encoder = recipe.load(threads)
        self.outputs, self.chunk_tokens, self.overlap = outputs, chunk_tokens, overlap

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        documents = [pickle.loads(item) for item in batch["document"]]
        prepared = prepare_documents(self.encoder, documents, self.outputs, self.chunk_tokens, self.overlap)
        return {"prepared": np.array([pickle.dumps(p) for p in prepared], dtype=object)}


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray connected to ``address``, or a private local Ray on 127.0.0.1 that ends with the block."""
    os.environ.update(LOOPBACK_ENV)  # read when ray is first imported, and by the processes it starts
    ray = require("ray", "ray", "Distributed ingestion (--ray)")
    if address is not None:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        try:
            yield ray
        finally:
            ray.shutdown()
        return
    if ray._private.ray_constants.ENABLE_RAY_CLUSTER:
        raise ConfigError("ray was imported before m3search could keep a local Ray on 127.0.0.1: set "
                          "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray, or pass a cluster address")
    previous = os.environ.get("RAY_TMPDIR")
    with tempfile.TemporaryDirectory(prefix="m3ray-", dir="/tmp") as scratch:  # short: Ray's socket paths must fit
        os.environ["RAY_TMPDIR"] = scratch  # its cluster-address file too: a stale one is never joined
        (Path(scratch) / "ray").mkdir()
        try:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                     _temp_dir=str(Path(scratch) / "ray"), _node_ip_address="127.0.0.1")
            yield ray
        finally:
            ray.shutdown()
            if previous is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = previous


def index_documents_ray(
    store: Store,
    encoder: Encoder,
    collection: str,
    documents: Sequence[Document],
    *,
    options: RayOptions,
    outputs: Sequence[Output] | None = None,
    chunk_tokens: int | None = None,
    overlap: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IndexReport:
    """:func:`~m3search.ingest.pipeline.index_documents` with chunking and embedding on a Ray actor pool.

    The driver plans (creates the collection, skips unchanged documents) and writes each batch in one transaction,
    as the single-process path does, so the store ends up the same.
    """
    options = options.check()
    start = time.perf_counter()
    plan, report = start_index(store, encoder, collection, documents, outputs=outputs, chunk_tokens=chunk_tokens,
                               overlap=overlap, progress=progress)
    if plan.todo:
        recipe = EncoderRecipe.of(encoder, get_settings().home)
        with ray_session(options.address) as ray:
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True  # the same batches, so the same writes, every run
            context.enable_progress_bars = False
            for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
                logging.getLogger(name).setLevel(logging.WARNING)  # no per-dataset INFO lines on the terminal
            items = [{"document": pickle.dumps(d)} for d in plan.todo]
            dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items) // options.batch_docs))
            embedded = dataset.map_batches(
                Embedder, fn_constructor_args=(recipe, options.threads, plan.outputs, plan.chunk_tokens,
                                               plan.overlap),
                batch_size=options.batch_docs, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=options.actors), num_cpus=options.threads)
            for batch in embedded.iter_batches(batch_size=options.batch_docs, batch_format="numpy"):
                prepared = [pickle.loads(item) for item in batch["prepared"]]
                write_prepared(store, plan, prepared, report)
                if progress is not None:
                    progress(len(prepared), sum(len(p.chunks) for p in prepared))
    report.seconds = time.perf_counter() - start
    return report
