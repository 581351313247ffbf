"""How far a reranker's INT8 graph strays from fp32 on a held-out sample, checked once and kept in the manifest.

Sample: the first ``QUERIES`` texts of the bundled ``fidelity.txt`` give queries (their first words); each query is
scored against ``PASSAGES`` texts (cut to ``PASSAGE_CHARS`` characters). The primary metric is the mean over the
queries of the Spearman correlation between the fp32 and INT8 rankings (``rank_spearman_mean``); the top-1 agreement
and the largest absolute logit error are recorded beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np

from m3search.errors import FidelityError
from m3search.types import FloatArray

QUERIES = 8
PASSAGES = 12
QUERY_WORDS = 8
PASSAGE_CHARS = 600
METRIC = "rank_spearman_mean"
log = logging.getLogger(__name__)

Logits = Callable[[Any, str, Sequence[str]], FloatArray]  # (session, query, passages) -> logits


def sample() -> list[tuple[str, list[str]]]:
    """(query, passages) pairs of the held-out sample."""
    texts = [line.strip() for line in resources.files("m3search.data").joinpath("fidelity.txt")
             .read_text(encoding="utf-8").splitlines() if line.strip()]
    passages = [t[:PASSAGE_CHARS] for t in texts[:PASSAGES]]
    return [(" ".join(t.split()[:QUERY_WORDS]), passages) for t in texts[:QUERIES]]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(-a)), np.argsort(np.argsort(-b))
    n = len(a)
    return 1.0 - 6.0 * float(((ra - rb) ** 2).sum()) / (n * (n * n - 1)) if n > 1 else 1.0


def measure(logits: Logits, reference: Any, candidate: Any) -> dict[str, float]:
    """Fidelity figures of ``candidate``'s session against ``reference``'s (fp32) on the sample."""
    spearman, top1, error = [], [], 0.0
    for query, passages in sample():
        ref = np.asarray(logits(reference, query, passages), dtype=np.float64)
        got = np.asarray(logits(candidate, query, passages), dtype=np.float64)
        spearman.append(_spearman(ref, got))
        top1.append(float(np.argmax(ref) == np.argmax(got)))
        error = max(error, float(np.abs(ref - got).max()))
    return {METRIC: float(np.mean(spearman)), "rank_spearman_min": float(np.min(spearman)),
            "top1_agreement": float(np.mean(top1)), "max_abs_logit_error": error}


def check(figures: dict[str, float], mode: str, threshold: float, force: bool) -> None:
    """Raise :class:`FidelityError` when the primary metric is below ``threshold``, unless forced (then warn)."""
    value = figures[METRIC]
    if value >= threshold:
        return
    if force:
        log.warning("%s keeps %s %.4f, below %.4f; used anyway (forced)", mode, METRIC, value, threshold)
        return
    raise FidelityError(mode, METRIC, value, threshold)
