"""The rerank stage after any strategy: a cross-encoder, or an LLM behind an OpenAI-compatible chat endpoint.

The first stage returns ``rerank_k`` candidates; the reranker reorders them on the chunk text and the top ``k``
are returned. Every hit keeps its first-stage rank and score (``breakdown["first_stage"]``) beside the rerank's
(``breakdown["rerank"]``). Cross-encoder failures (a missing model) are errors; LLM failures (timeout, HTTP
error, unreachable, an unparseable answer) *fail open*: the first-stage order is kept and each hit and the
result say so (``"status": "failed-open"`` with the reason). The rerank runs in m3search on the returned hits,
so it works the same over every store.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace

from m3search.errors import LLMError
from m3search.llm import ChatEndpoint, chat, configured_endpoint
from m3search.models.rerank.cross_encoder import load_reranker
from m3search.models.rerank.registry import LLM, get_reranker
from m3search.retrieval.runtime import Scorer, ScorerKey, default_runtime
from m3search.retrieval.types import Contribution, RerankNote, SearchHit, SearchRequest, SearchResult
from m3search.settings import Settings, get_settings

LLM_PASSAGE_CHARS = 1200  # each candidate's text is cut to this many characters in the prompt
_SYSTEM = ("You rank passages by how well they answer a search query. Reply with only a JSON array of passage "
           "numbers, most relevant first, for example [3, 1, 2]. No explanation.")
_ARRAY = re.compile(r"\[[^\[\]]*\]")


class LLMReranker:
    """Asks a chat model to order the candidates; raises :class:`LLMError` on any failure (the stage fails open)."""

    name = LLM

    def __init__(self, endpoint: ChatEndpoint, *, passage_chars: int = LLM_PASSAGE_CHARS) -> None:
        self.endpoint = endpoint
        self.passage_chars = passage_chars

    def messages(self, query: str, passages: Sequence[str]) -> list[dict[str, str]]:
        """The prompt: the query and the numbered candidates."""
        listed = "\n".join(f"[{i}] {' '.join(p.split())[: self.passage_chars]}" for i, p in enumerate(passages, 1))
        user = (f"Query: {query}\n\nPassages:\n{listed}\n\nReturn the JSON array of the passage numbers "
                f"1 to {len(passages)}, most relevant first.")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    def order(self, query: str, passages: Sequence[str]) -> list[int]:
        """Candidate indices (0-based), best first; candidates the answer leaves out follow in their old order."""
        if not passages:
            return []
        answer = chat(self.endpoint, self.messages(query, passages))
        ranked = parse_order(answer, len(passages))
        return ranked + [i for i in range(len(passages)) if i not in set(ranked)]


def parse_order(answer: str, count: int) -> list[int]:
    """The 0-based indices named by the first JSON array of 1-based passage numbers in ``answer``.

    Numbers out of range and repeats are dropped. Raises :class:`LLMError` when no array names any candidate.
    """
    for match in _ARRAY.finditer(answer):
        try:
            items = json.loads(match.group(0))
        except ValueError:
            continue
        found: list[int] = []
        for item in items:
            number = item if isinstance(item, int) and not isinstance(item, bool) else _number(item)
            if number is not None and 1 <= number <= count and number - 1 not in found:
                found.append(number - 1)
        if found:
            return found
    raise LLMError(f"the LLM's answer is not a JSON array of passage numbers: {answer[:120]!r}")


def _number(item: object) -> int | None:
    if isinstance(item, str) and item.strip().lstrip("[").rstrip("]").isdigit():
        return int(item.strip().lstrip("[").rstrip("]"))
    if isinstance(item, float) and item.is_integer():
        return int(item)
    return None


ScorerLoader = Callable[[str, Settings], Scorer]
_LOADING = threading.Lock()  # one cross-encoder loads at a time


def _load(name: str, settings: Settings) -> Scorer:
    return load_reranker(name, settings=settings)


class RerankerPool:
    """Rerankers for searches: cross-encoders loaded once (per model, home, precision, threads) into ``cache``
    (default: the process-wide runtime's, :func:`~m3search.retrieval.runtime.default_runtime`) and reused; the LLM
    endpoint from ``endpoint`` or the settings (``M3SEARCH_LLM_URL``, ``_MODEL``, ``_API_KEY``, ``_TIMEOUT``).
    """

    def __init__(self, settings: Settings | None = None, *, endpoint: ChatEndpoint | None = None,
                 loader: ScorerLoader = _load, cache: dict[ScorerKey, Scorer] | None = None) -> None:
        self.settings = settings or get_settings()
        self.endpoint = endpoint
        self._loader = loader
        self._cache = default_runtime().scorers if cache is None else cache

    def scorer(self, name: str) -> Scorer:
        """The cross-encoder ``name`` (loaded lazily, shared by every search of this process)."""
        spec = get_reranker(name)
        cfg = self.settings
        key = (spec.name, str(cfg.home), cfg.rerank_precision, cfg.effective_threads())
        with _LOADING:
            if key not in self._cache:
                self._cache[key] = self._loader(spec.name, cfg)
            return self._cache[key]

    def llm(self) -> LLMReranker:
        """The LLM reranker; :class:`ConfigError` naming the settings when no endpoint is configured."""
        endpoint = self.endpoint or configured_endpoint(self.settings, "LLM reranking",
                                                        cli_how=" (or --llm-url/--llm-model)")
        return LLMReranker(endpoint)

    def check(self, name: str) -> None:
        """Refuse a misconfigured rerank before the first stage runs (the LLM settings; the name is checked by
        :meth:`SearchRequest.checked`)."""
        if name == LLM:
            self.llm()


def rerank_result(first: SearchResult, query: str, request: SearchRequest, pool: RerankerPool) -> SearchResult:
    """Rerank ``first`` (the first stage's top ``rerank_k``) for ``query`` and keep the top ``request.k``."""
    assert request.rerank is not None
    hits = first.hits
    texts = [hit.text for hit in hits]
    scores: list[float] | None = None
    summary: dict[str, object] = {"rerank_k": request.rerank_k, "candidates": len(hits)}
    if request.rerank == LLM:
        ranker = pool.llm()
        by, summary["llm_model"] = LLM, ranker.endpoint.model
        try:
            order = ranker.order(query, texts)
            scores = [0.0] * len(hits)
            for rank, index in enumerate(order):
                scores[index] = 1.0 - rank / max(len(hits), 1)  # rank-derived: 1 for the best, falling by 1/n
        except LLMError as exc:
            summary["reason"] = str(exc)
    else:
        by = get_reranker(request.rerank).name
        scores = pool.scorer(by).score(query, texts) if hits else []
    note = RerankNote(by=by, status="ok" if scores is not None else "failed-open",
                      reason=str(summary["reason"]) if "reason" in summary else None)
    reranked = _apply(hits, scores, note)[: request.k]
    summary = {"by": by, "status": note.status, **summary}
    details = {**first.details, "k": request.k, "rerank": summary}
    return replace(first, hits=reranked, details=details)


def _apply(hits: list[SearchHit], scores: list[float] | None, note: RerankNote) -> list[SearchHit]:
    """Hits in rerank order (first-stage order on ties and when failed open), breakdowns extended."""
    firsts = [Contribution(rank, hit.score) for rank, hit in enumerate(hits, start=1)]
    if scores is None:
        return [replace(hit, breakdown={**hit.breakdown, "first_stage": first}, rerank=note)
                for hit, first in zip(hits, firsts, strict=True)]
    order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
    result = []
    for rank, index in enumerate(order, start=1):
        hit = hits[index]
        breakdown = {**hit.breakdown, "first_stage": firsts[index], "rerank": Contribution(rank, scores[index])}
        result.append(replace(hit, score=scores[index], breakdown=breakdown, rerank=note))
    return result
