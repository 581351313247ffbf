"""Fine-tuning data from an indexed collection: generated queries, a quality filter, hard negatives mined with the
collection's own index, and a split by document.

Steps: (1) query candidates per document (offline generators or an LLM, see
:mod:`~m3search.finetune.queries`); (2) drop duplicates (the same words as an earlier query of any
document) and queries of fewer than 2 words; (3) drop queries whose positive's document is in neither the BM25
nor the dense top ``filter_k`` documents; (4) hard negatives: the ``negatives_strategy`` search for the query,
hits of the positive's document left out, one chunk (the best) per document, the first ``negatives_skip``
documents skipped (likely unjudged relevant ones: false negatives), the next ``hard_negatives`` kept; a key
sentence's positive is its chunk, or with ``sentence_positive="rest"`` the chunk without the sentence (the
inverse cloze task of Lee et al., 2019: the model must match meaning, not copied words);
(5) documents shuffled with ``seed``, the first ``validation_split`` of them make the validation split.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from m3search import __version__
from m3search.errors import InputError, ParameterError
from m3search.finetune.collection import CollectionData, load_collection
from m3search.finetune.examples import Example
from m3search.finetune.queries import ORIGINS, Candidate, llm_candidates, offline_candidates
from m3search.limits import MAX_K, MAX_NEGATIVES, MAX_QUERIES_PER_DOC
from m3search.llm import ChatEndpoint
from m3search.models.encoders.base import Encoder
from m3search.retrieval.lexical import fts_tokens
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.store.base import Store
from m3search.store.types import Document
from m3search.types import Embedding

Progress = Callable[[int, int], None]
REASONS = ("duplicate", "too_short", "not_retrievable", "llm_failure")
NEGATIVE_STRATEGIES = ("dense", "hybrid")
SENTENCE_POSITIVES = ("chunk", "rest")  # a key sentence's positive: its whole chunk, or the chunk without it (ICT)


@dataclass(frozen=True)
class GenerateOptions:
    """What ``finetune generate`` makes (see the module docstring for each step)."""

    queries_per_doc: int = 4
    validation_split: float = 0.1
    hard_negatives: int = 3
    negatives_skip: int = 2
    negatives_strategy: str = "hybrid"
    filter_k: int = 10
    seed: int = 0
    llm: ChatEndpoint | None = None
    sentence_positive: str = "chunk"

    def checked(self) -> GenerateOptions:
        """Validate; raises :class:`InputError` naming the bad value."""
        for name, low, high in (("queries_per_doc", 1, MAX_QUERIES_PER_DOC), ("hard_negatives", 0, MAX_NEGATIVES),
                                ("negatives_skip", 0, MAX_NEGATIVES), ("filter_k", 1, MAX_K)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ParameterError(name, f"must be an integer from {low} to {high}, not {value!r}")
        if not isinstance(self.validation_split, int | float) or not 0 <= self.validation_split < 1:
            raise ParameterError("validation_split", f"must be >= 0 and < 1, not {self.validation_split!r}")
        if self.negatives_strategy not in NEGATIVE_STRATEGIES:
            raise ParameterError("negatives_strategy", f"must be one of {', '.join(NEGATIVE_STRATEGIES)}, not "
                                                       f"{self.negatives_strategy!r}", flag="--negatives-from")
        if not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer, not {self.seed!r}")
        if self.sentence_positive not in SENTENCE_POSITIVES:
            raise InputError(f"sentence_positive must be one of {', '.join(SENTENCE_POSITIVES)}, "
                             f"not {self.sentence_positive!r}")
        return self

    def as_dict(self) -> dict[str, Any]:
        found = {k: v for k, v in asdict(self).items() if k != "llm"}
        found["llm"] = {"url": self.llm.url, "model": self.llm.model} if self.llm else None  # never the key
        return found


@dataclass
class GenerationReport:
    """What was generated, kept and dropped (by reason and origin), and the sizes of the two splits."""

    collection: str
    model: str
    parameters: dict[str, Any]
    documents: int = 0
    chunks: int = 0
    generated: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    dropped: dict[str, Counter[str]] = field(default_factory=lambda: {r: Counter() for r in REASONS})
    retrieved_by: Counter[str] = field(default_factory=Counter)
    train_examples: int = 0
    validation_examples: int = 0
    train_documents: int = 0
    validation_documents: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        def by_origin(counts: Counter[str]) -> dict[str, int]:
            return {o: counts[o] for o in ORIGINS if counts[o]}

        return {"m3search_version": __version__, "collection": self.collection, "model": self.model,
                "parameters": self.parameters, "documents": self.documents, "chunks": self.chunks,
                "documents_used": self.train_documents + self.validation_documents,
                "generated": {"total": sum(self.generated.values()), **by_origin(self.generated)},
                "kept": {"total": sum(self.kept.values()), **by_origin(self.kept)},
                "dropped": {r: {"total": sum(c.values()), **by_origin(c)} for r, c in self.dropped.items()},
                "kept_retrieved_by": dict(sorted(self.retrieved_by.items())),
                "train": {"examples": self.train_examples, "documents": self.train_documents},
                "validation": {"examples": self.validation_examples, "documents": self.validation_documents},
                "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class GeneratedData:
    """Both splits, the collection's documents (the validation corpus) and the report."""

    train: list[Example]
    validation: list[Example]
    corpus: list[Document]
    report: GenerationReport


def _candidates(data: CollectionData, options: GenerateOptions, report: GenerationReport,
                progress: Progress | None) -> list[Candidate]:
    found: list[Candidate] = []
    for doc in data.documents:
        if progress is not None:
            progress(0, 0)  # nothing searched yet; lets a server job stop between documents (LLM calls are slow)
        chunks = data.chunks.get(doc.doc_id, [])
        if not chunks:
            continue
        if options.llm is None:
            made = offline_candidates(doc.doc_id, doc.title, chunks, options.queries_per_doc, options.seed)
        else:
            made, failed = llm_candidates(options.llm, doc.doc_id, chunks, options.queries_per_doc,
                                          strict=not found and not report.dropped["llm_failure"])
            report.generated["llm"] += failed
            report.dropped["llm_failure"]["llm"] += failed
        report.generated.update(c.origin for c in made)
        found.extend(made)
    return found


def _deduplicated(candidates: Sequence[Candidate], report: GenerationReport) -> list[Candidate]:
    seen: set[tuple[str, ...]] = set()
    kept = []
    for candidate in candidates:
        words = tuple(fts_tokens(candidate.query))
        if len(words) < 2:
            report.dropped["too_short"][candidate.origin] += 1
        elif words in seen:
            report.dropped["duplicate"][candidate.origin] += 1
        else:
            seen.add(words)
            kept.append(candidate)
    return kept


def _top_documents(searcher: Searcher, collection: str, candidate: Candidate, embedding: Embedding | None,
                   strategy: str, k: int) -> list[str]:
    """The first ``k`` documents of a ``strategy`` search (each ranked by its best chunk)."""
    request = SearchRequest(strategy, k=k, group_by="document")  # type: ignore[arg-type]
    return [h.document_id for h in searcher.search_embedded(collection, candidate.query, embedding, request).hits]


def _negatives(searcher: Searcher, collection: str, candidate: Candidate, embedding: Embedding | None,
               options: GenerateOptions) -> tuple[str, ...]:
    if options.hard_negatives == 0:
        return ()
    wanted = options.negatives_skip + options.hard_negatives + 1  # + the candidate's own document
    request = SearchRequest(options.negatives_strategy, k=wanted, group_by="document")  # type: ignore[arg-type]
    hits = searcher.search_embedded(collection, candidate.query, embedding, request).hits
    best = [hit.text for hit in hits if hit.document_id != candidate.doc_id]  # each document's best chunk
    return tuple(best[options.negatives_skip:][:options.hard_negatives])


def _examples(searcher: Searcher, collection: str, data: CollectionData, candidates: Sequence[Candidate],
              options: GenerateOptions, report: GenerationReport, progress: Progress | None) -> list[Example]:
    """Candidates that pass the retrievability filter, with their positives' texts and hard negatives."""
    strategies = ["bm25", "dense", options.negatives_strategy]
    embeddings = searcher.encode_queries(collection, [c.query for c in candidates], strategies)
    texts = {c.chunk_id: c.text for chunks in data.chunks.values() for c in chunks}
    examples = []
    for done, (candidate, embedding) in enumerate(zip(candidates, embeddings, strict=True), start=1):
        found = [name for name in ("bm25", "dense") if candidate.doc_id in
                 _top_documents(searcher, collection, candidate, embedding, name, options.filter_k)]
        if found:
            report.kept[candidate.origin] += 1
            report.retrieved_by["both" if len(found) == 2 else found[0]] += 1
            positive = texts[candidate.chunk_id]
            if candidate.origin == "sentence" and options.sentence_positive == "rest":
                positive = without_passage(positive, candidate.query)
            examples.append(Example(candidate.query, positive,
                                    _negatives(searcher, collection, candidate, embedding, options),
                                    candidate.doc_id, candidate.chunk_id, candidate.origin))
        else:
            report.dropped["not_retrievable"][candidate.origin] += 1
        if progress is not None:
            progress(done, len(candidates))
    return examples


def without_passage(text: str, passage: str, *, min_words: int = 8) -> str:
    """``text`` without the words of ``passage`` (the inverse cloze task: a sentence's positive is the rest of its
    chunk, so training cannot match it by copying words); ``text`` itself when ``passage`` is not in it or fewer
    than ``min_words`` words would be left."""
    words, cut = text.split(), passage.split()
    for start in range(len(words) - len(cut) + 1):
        if words[start:start + len(cut)] == cut:
            rest = words[:start] + words[start + len(cut):]
            return " ".join(rest) if len(rest) >= min_words else text
    return text


def split_documents(doc_ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The validation documents: ``round(fraction * n)`` of the distinct ``doc_ids`` (at least one when
    ``fraction`` > 0 and at least one left for training), chosen by a shuffle seeded with ``seed``."""
    docs = sorted(set(doc_ids))
    random.Random(seed).shuffle(docs)
    count = round(fraction * len(docs))
    if fraction > 0 and len(docs) > 1:
        count = min(max(count, 1), len(docs) - 1)
    return set(docs[:count])


def generate(store: Store, encoder: Encoder, collection: str, options: GenerateOptions | None = None, *,
             progress: Progress | None = None, searcher: Searcher | None = None) -> GeneratedData:
    """Generate fine-tuning data from ``collection`` (``encoder``: the collection's model, for dense search).

    Raises:
        CollectionNotFoundError: no such collection.
        InputError: a bad option.
        LLMError: the LLM endpoint failed at its first call (later failures are counted in the report).
    """
    start = time.perf_counter()
    options = (options or GenerateOptions()).checked()
    data = load_collection(store, collection)
    report = GenerationReport(collection, store.active_set(collection).config.model, options.as_dict(),
                              len(data.documents), data.chunk_count)
    searcher = searcher or Searcher(store, encoder)
    candidates = _deduplicated(_candidates(data, options, report, progress), report)
    examples = _examples(searcher, collection, data, candidates, options, report, progress) if candidates else []
    validation_docs = split_documents([e.doc_id for e in examples], options.validation_split, options.seed)
    train = [e for e in examples if e.doc_id not in validation_docs]
    validation = [e for e in examples if e.doc_id in validation_docs]
    report.train_examples, report.validation_examples = len(train), len(validation)
    report.train_documents = len({e.doc_id for e in train})
    report.validation_documents = len(validation_docs)
    report.seconds = time.perf_counter() - start
    return GeneratedData(train, validation, data.documents, report)
