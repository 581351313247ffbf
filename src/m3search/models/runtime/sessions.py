"""Turning an encoder's (backend, precision) into a ready session: auto choice, variant, fidelity check.

``backend="auto"`` runs a one-time micro-benchmark of every installed backend at the requested precision
(each must pass the fidelity check), on the bundled held-out sample, and caches the winner and its token
budget in ``M3SEARCH_HOME/autotune.json`` per model, precision and machine (CPU, cores, threads, engine
versions). Set ``M3SEARCH_BACKEND`` to skip it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from m3search.errors import M3SearchError
from m3search.models.prepare.cache import lock_for, package_version, write_json
from m3search.models.prepare.calibration import bundled, calibration_texts
from m3search.models.prepare.variants import ensure_variant
from m3search.models.runtime import fidelity
from m3search.models.runtime.backends import Session, available_backends, open_session
from m3search.models.runtime.contract import LoadedSession, RunOptions, SessionOwner
from m3search.models.runtime.reference import fp32_reference

log = logging.getLogger(__name__)
T = TypeVar("T")
BUDGETS = (512, 2048, 8192)  # token budgets the auto-tuner tries for the winning backend
BUDGET_TUNING_SECONDS = 15.0  # budgets are tuned only when one pass over the sample takes at most this long

__all__ = ["LoadedSession", "RunOptions", "choose_backend", "fastest_backend", "load_session", "machine_key",
           "open_graph"]


def open_graph(backend: str, path: Path, precision: str, threads: int, options: RunOptions) -> Session:
    """The one place a session over a prepared graph is opened, for every model kind (encoders, CLIP's vision
    tower, cross-encoders): ``backend`` is "onnxruntime" or "openvino" (resolve "auto" first)."""
    return open_session(backend, path, precision, threads, spinning=options.spinning,
                        cache_dir=options.openvino_cache)


def load_session(encoder: SessionOwner) -> LoadedSession:
    """Build (or reuse) the encoder's variant, check its fidelity, and open its session.

    The fp32 reference of an unchecked mode is computed before the candidate's session opens (in a child
    process: :mod:`.reference`), so first use never holds two copies of the model. The encoder is not changed:
    the backend "auto" chose and its token budget come back in the result.
    """
    prepared = encoder.prepared
    backend, precision, batch_tokens = encoder.backend, encoder.precision, encoder.batch_tokens
    if backend == "auto":
        backend, batch_tokens, measured = choose_backend(encoder)
        if measured is not None:  # the winner's session, opened and checked while it was measured
            return LoadedSession(measured, backend, batch_tokens)
    options = encoder.options
    path = ensure_variant(prepared, backend, precision,
                          lambda: calibration_texts(options.calibration_file, options.calibration_size), encoder.feeds)
    checked = (backend, precision) != ("onnxruntime", "fp32")
    figures = (prepared.variant(backend, precision) or {}).get("fidelity")
    texts, outputs = bundled("fidelity"), list(encoder.spec.outputs)
    reference = fp32_reference(encoder, texts, outputs) if checked and not figures else None
    session = open_graph(backend, path, precision, encoder.threads, options)
    if checked:
        if reference is not None:
            candidate = encoder.sibling(backend, precision, session=session, batch_tokens=batch_tokens).encode(
                texts, outputs=outputs)
            figures = fidelity.measure(reference, candidate)
            prepared.record(backend, precision, {"fidelity": figures})
            log.info("fidelity of %s/%s: %s", backend, precision, figures)
        fidelity.check(f"{backend}/{precision}", figures or {}, options.fidelity_threshold,
                       force=options.force_precision)
    return LoadedSession(session, backend, batch_tokens)


def machine_key(threads: int) -> str:
    """What a measured speed depends on besides the model: CPU, cores, threads, engine versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    engines = ",".join(f"{p}={package_version(p)}" for p in ("onnxruntime", "openvino"))
    return f"{cpu}|cores={os.cpu_count()}|threads={threads}|{engines}"


def choose_backend(encoder: SessionOwner) -> tuple[str, int, Session | None]:
    """The fastest installed backend that passes the fidelity check, its token budget (cached), and its session
    when it was measured now (None when the choice came from the cache)."""
    backends = available_backends()
    if len(backends) == 1:
        return backends[0], encoder.batch_tokens, None
    key = f"{encoder.spec.name}/{encoder.prepared.directory.name}/{encoder.precision}/{machine_key(encoder.threads)}"
    cache_file = encoder.options.home / "autotune.json" if encoder.options.home is not None else None
    cached = _read_cache(cache_file).get(key)
    if cached:
        return str(cached["backend"]), int(cached["batch_tokens"]), None
    texts = bundled("fidelity")
    measured: dict[str, float] = {}
    seconds: dict[str, float] = {}
    refused: dict[str, M3SearchError] = {}
    for backend in backends:
        try:
            measured[backend], seconds[backend] = _tokens_per_s(encoder.sibling(backend, encoder.precision), texts)
        except M3SearchError as exc:  # this mode is refused (fidelity, bf16) or unavailable on this backend
            refused[backend] = exc
        gc.collect()  # the measured session goes now (encoders hold reference cycles), before the next one loads
    if not measured:
        raise refused[backends[0]]
    best = max(measured, key=lambda b: measured[b])
    leader = encoder.sibling(best, encoder.precision).session  # opened once more: the budgets and the encoder share it
    rates: dict[str, Any] = {**measured, **{b: str(e) for b, e in refused.items()}}
    budgets: dict[int, float] = {}
    if seconds[best] <= BUDGET_TUNING_SECONDS:  # a large model keeps the default budget: first use stays short
        budgets = {b: _tokens_per_s(encoder.sibling(best, encoder.precision, batch_tokens=b, session=leader),
                                    texts)[0] for b in BUDGETS}
    budget = max(budgets, key=lambda b: budgets[b]) if budgets else encoder.batch_tokens
    choice: dict[str, Any] = {"backend": best, "batch_tokens": budget, "tokens_per_s": rates,
                              "budgets_tokens_per_s": budgets, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}
    log.info("auto backend for %s: %s", key, choice)
    _remember(cache_file, key, choice)
    return best, budget, leader


def fastest_backend(key: str, threads: int, home: Path | None, open_backend: Callable[[str], T],
                    rate: Callable[[T], float]) -> tuple[str, T]:
    """"auto" for any model kind: the installed backend whose ``open_backend(backend)`` (fidelity-checked there)
    gets the highest ``rate``, and what it opened. A refused backend (:class:`~m3search.errors.M3SearchError`) is
    skipped. The choice is cached in ``home/autotune.json`` per ``key`` and machine: a cached one is opened alone."""
    backends = available_backends()
    full_key = f"{key}/{machine_key(threads)}"
    cache_file = home / "autotune.json" if home is not None else None
    entry = _read_cache(cache_file).get(full_key)
    cached = str(entry.get("backend")) if isinstance(entry, dict) else ""
    if len(backends) == 1 or cached in backends:
        backend = cached if cached in backends else backends[0]
        return backend, open_backend(backend)
    rates: dict[str, Any] = {}
    refused: list[M3SearchError] = []
    best: tuple[str, T] | None = None
    for backend in backends:
        try:
            opened = open_backend(backend)
            rates[backend] = rate(opened)
        except M3SearchError as exc:  # refused (fidelity) or unavailable on this backend
            rates[backend] = str(exc)
            refused.append(exc)
            continue
        if best is None or rates[backend] > rates[best[0]]:
            best = (backend, opened)  # the slower one is released here
        gc.collect()
    if best is None:
        raise refused[0]
    log.info("auto backend for %s: %s (%s)", full_key, best[0], rates)
    _remember(cache_file, full_key, {"backend": best[0], "per_s": rates,
                                     "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return best


def _remember(cache_file: Path | None, key: str, choice: dict[str, Any]) -> None:
    """Record an "auto" choice in ``autotune.json`` (other processes' entries are kept)."""
    if cache_file is None:
        return
    with lock_for(cache_file):
        data = _read_cache(cache_file)
        data[key] = choice
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, data)


def _tokens_per_s(encoder: SessionOwner, texts: list[str]) -> tuple[float, float]:
    """(tokens per second, seconds) of one pass over ``texts``, after a warm-up."""
    encoder.encode(texts[:8])  # warm-up: session built, kernels compiled
    start = time.perf_counter()
    results = encoder.encode(texts)
    elapsed = time.perf_counter() - start
    return sum(r.tokens for r in results) / elapsed, elapsed


def _read_cache(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
