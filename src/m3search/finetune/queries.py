"""Query candidates for fine-tuning data: offline (titles, key sentences, keyphrases chosen by BM25 term weights)
or from an LLM endpoint.

Everything here is deterministic for a given seed: the only randomness is the keyphrase length (2 to 4 terms),
drawn from a generator seeded with ``(seed, document id)``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from m3search.errors import LLMError
from m3search.llm import ChatEndpoint, chat
from m3search.retrieval.lexical import fts_tokens

Origin = Literal["title", "sentence", "keyphrase", "llm"]
ORIGINS: tuple[Origin, ...] = ("title", "sentence", "keyphrase", "llm")
MAX_SENTENCE_WORDS = 24  # a longer key sentence is cut to its heaviest window of this many words
PER_CHUNK = 3  # at most this many sentences and keyphrase queries per chunk

# English function words (and a few corpus fillers) never chosen as keyphrase terms.
_STOPWORD_TEXT = """
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each either etc few for from further had has have having he her here
hers herself him himself his how however i if in into is it its itself just may me might more most must my myself
no nor not now of off on once only or other our ours ourselves out over own same shall she should so some such than
that the their theirs them themselves then there these they this those through thus to too under until up upon us
very was we were what when where whether which while who whom why will with within without would yet you your yours
yourself yourselves one two three use used using given shown show obtained results result paper present method
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\n+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class SourceChunk:
    """A chunk of the collection as the generators see it: ``weights`` maps its terms to BM25 weights,
    ``unique`` holds its terms that no other chunk has (typos, names: poor keyphrases)."""

    chunk_id: int
    doc_id: str
    text: str
    weights: dict[str, float]
    unique: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Candidate:
    """A generated query and the chunk it was made from (its positive)."""

    query: str
    doc_id: str
    chunk_id: int
    origin: Origin


def _weight(text: str, weights: dict[str, float]) -> float:
    return sum(weights.get(t, 0.0) for t in fts_tokens(text))


def key_sentences(chunk: SourceChunk, title: str = "") -> list[str]:
    """The chunk's sentences by the sum of their terms' BM25 weights (heaviest first; the title line and
    sentences of fewer than 4 words are skipped); long sentences are cut to their heaviest window."""
    found: list[tuple[float, int, str]] = []
    for position, raw in enumerate(_SENTENCE.split(chunk.text)):
        sentence = " ".join(raw.split())
        words = _WORD.findall(sentence)
        if len(words) < 4 or sentence == title.strip():
            continue
        if len(words) > MAX_SENTENCE_WORDS:
            windows = [" ".join(words[i:i + MAX_SENTENCE_WORDS]) for i in range(len(words) - MAX_SENTENCE_WORDS + 1)]
            sentence = max(windows, key=lambda w: _weight(w, chunk.weights))  # first of equal windows
        found.append((-_weight(sentence, chunk.weights), position, sentence))
    return [s for _, _, s in sorted(found)[:PER_CHUNK]]


def keyphrases(chunk: SourceChunk, rng: random.Random) -> list[str]:
    """Queries of 2 to 4 of the chunk's heaviest BM25 terms (stopwords, numbers and 1-2 letter terms out; terms
    found in no other chunk only after the others), the heaviest terms first, each query's terms in text order."""
    tokens = fts_tokens(chunk.text)  # first-occurrence order
    usable = [t for t in tokens if t not in STOPWORDS and len(t) > 2 and not t.isdigit()]
    ranked = sorted(usable, key=lambda t: (t in chunk.unique, -chunk.weights.get(t, 0.0), tokens.index(t)))
    queries: list[str] = []
    start = 0
    while start < len(ranked) and len(queries) < PER_CHUNK:
        size = rng.randint(2, 4)
        terms = ranked[start:start + size]
        start += size
        queries.append(" ".join(sorted(terms, key=tokens.index)))
    return queries


def _interleave(first: Sequence[Candidate], second: Sequence[Candidate]) -> Iterator[Candidate]:
    for position in range(max(len(first), len(second))):
        yield from (stream[position] for stream in (first, second) if position < len(stream))


def _by_round(doc_id: str, chunks: Sequence[SourceChunk], found: Sequence[Sequence[str]], origin: Origin
              ) -> list[Candidate]:
    """Every chunk's first choice (in chunk order), then every chunk's second choice, and so on."""
    rounds = max((len(f) for f in found), default=0)
    return [Candidate(queries[rank], doc_id, chunk.chunk_id, origin) for rank in range(rounds)
            for chunk, queries in zip(chunks, found, strict=True) if rank < len(queries)]


def offline_candidates(doc_id: str, title: str, chunks: Sequence[SourceChunk], count: int, seed: int
                       ) -> list[Candidate]:
    """``count`` queries for one document: its title (positive: the first chunk), then key sentences and
    keyphrase queries alternately, going over the chunks in order before taking a chunk's second choice."""
    if not chunks or count < 1:
        return []
    rng = random.Random(f"{seed}\0{doc_id}")
    titles = [Candidate(" ".join(title.split()), doc_id, chunks[0].chunk_id, "title")] if title.strip() else []
    sentences = _by_round(doc_id, chunks, [key_sentences(c, title) for c in chunks], "sentence")
    phrases = _by_round(doc_id, chunks, [keyphrases(c, rng) for c in chunks], "keyphrase")
    return (titles + list(_interleave(sentences, phrases)))[:count]


PROMPT = ("Write {n} different search queries that a person could type into a search engine to find the passage "
          "below. Each query must be answered by the passage; use its language; do not copy whole sentences. "
          "Answer with a JSON list of {n} strings and nothing else.\n\nPassage:\n{text}")
_LIST_MARK = re.compile(r"^\s*(?:[-*\u2022]|\d+[.):]|q\d*[.):])\s*", re.IGNORECASE)


def parse_queries(reply: str, limit: int) -> list[str]:
    """Queries from an LLM's reply: a JSON list of strings (or an object with a ``queries`` list), possibly in a
    code fence; else one query per line, list marks and quotes stripped. At most ``limit``."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.strip("`").partition("\n")[2] if "\n" in text else text.strip("`")
        text = text.rsplit("```", 1)[0].strip()
    found: list[str] = []
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        parsed = parsed.get("queries")
    if isinstance(parsed, list):
        found = [q for q in parsed if isinstance(q, str)]
    elif parsed is None:
        found = [_LIST_MARK.sub("", line) for line in text.splitlines()]
    cleaned = [" ".join(q.strip().strip("\"'").split()) for q in found]
    return list(dict.fromkeys(q for q in cleaned if q))[:limit]


def llm_candidates(endpoint: ChatEndpoint, doc_id: str, chunks: Sequence[SourceChunk], count: int, *,
                   strict: bool = False) -> tuple[list[Candidate], int]:
    """``count`` queries for one document, spread over its chunks (the first chunks get one more when it does
    not divide), one chat call per chunk. Returns the candidates and how many asked-for queries failed (a call
    that raised :class:`LLMError`, or a reply with fewer usable queries than asked). With ``strict`` the first
    call's :class:`LLMError` is raised instead (an endpoint that is down or misconfigured from the start)."""
    found: list[Candidate] = []
    failed = 0
    for position, chunk in enumerate(chunks):
        n = count // len(chunks) + (position < count % len(chunks))
        if n == 0:
            continue
        messages = [{"role": "system", "content": "You write realistic search queries for retrieval training data."},
                    {"role": "user", "content": PROMPT.format(n=n, text=chunk.text)}]
        try:
            queries = parse_queries(chat(endpoint, messages), n)
        except LLMError:
            if strict:
                raise
            queries = []
        strict = False
        failed += n - len(queries)
        found.extend(Candidate(q, doc_id, chunk.chunk_id, "llm") for q in queries)
    return found, failed
