"""Property tests (hypothesis) of the pieces every result rests on: chunk spans, lexical scores, and encoders that
batch, sort and pad yet return results in input order. (RRF/weighted fusion and batch planning have theirs in
``tests/unit/test_fusion.py`` and ``tests/unit/test_batching.py``.)"""

from __future__ import annotations

import itertools
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from m3search.ingest.chunking import chunk_text
from m3search.models.encoders.scores import lexical_matching_score
from m3search.models.runtime.tokenize import HashTokenizer
from m3search.types import SparseVector
from tests.conftest import FAKE_M3_SPEC, FakeM3Encoder

WORDS = st.sampled_from(["wing", "flow", "über", "東京", "a", "layer-7", "x1", "naïve", "shock"])
SEPARATORS = st.sampled_from([" ", "  ", "\n", ", ", ". ", "\t", " — "])
TEXTS = st.lists(st.tuples(WORDS, SEPARATORS), min_size=1, max_size=300).map(
    lambda parts: "".join(w + s for w, s in parts))


@settings(max_examples=200, deadline=None)
@given(TEXTS, st.integers(4, 40), st.data())
def test_chunks_cover_the_text_exactly(text: str, size: int, data: st.DataObject) -> None:
    """Every chunk is the text between its offsets; together they cover every word; each respects the size;
    consecutive chunks move forward."""
    overlap = data.draw(st.integers(0, size - 1))
    chunks = chunk_text(text, HashTokenizer(), size, overlap)
    assert chunks and [c.ordinal for c in chunks] == list(range(len(chunks)))
    covered = np.zeros(len(text), dtype=bool)
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text and 0 < chunk.tokens <= size
        covered[chunk.start:chunk.end] = True
    for word in re.finditer(r"\w+", text):
        assert covered[word.start():word.end()].all(), word.group()
    for one, two in itertools.pairwise(chunks):
        assert one.start < two.start and one.end <= two.end


SPARSE = st.dictionaries(st.integers(0, 50), st.floats(0.01, 5.0), max_size=20)


def _vector(weights: dict[int, float]) -> SparseVector:
    keys = sorted(weights)
    return SparseVector(np.array(keys, dtype=np.int64), np.array([weights[k] for k in keys], dtype=np.float32))


@given(SPARSE, SPARSE)
def test_lexical_score_is_the_sum_over_shared_tokens(a: dict[int, float], b: dict[int, float]) -> None:
    expected = sum(np.float32(a[t]) * np.float32(b[t]) for t in set(a) & set(b))
    score = lexical_matching_score(_vector(a), _vector(b))
    assert abs(score - float(expected)) <= 1e-5 * max(1.0, abs(float(expected)))
    assert score == lexical_matching_score(_vector(b), _vector(a))  # symmetric
    assert _vector(a).to_dict() == {k: float(np.float32(v)) for k, v in a.items()}


@given(SPARSE, SPARSE, st.floats(0.1, 10))
def test_lexical_score_is_monotone_in_each_weight(a: dict[int, float], b: dict[int, float], factor: float) -> None:
    scaled = {k: v * factor for k, v in a.items()}
    base, more = lexical_matching_score(_vector(a), _vector(b)), lexical_matching_score(_vector(scaled), _vector(b))
    assert abs(more - base * factor) <= 1e-4 * max(1.0, abs(base * factor))


ENCODER = FakeM3Encoder(FAKE_M3_SPEC, batch_tokens=64, max_batch_size=4)
ALONE = FakeM3Encoder(FAKE_M3_SPEC, max_batch_size=1)


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXTS, min_size=1, max_size=25))
def test_batched_encoding_returns_results_in_input_order(texts: list[str]) -> None:
    """Sorting by length, token budgets and padding never mix up whose vector is whose."""
    batched = ENCODER.encode(texts, outputs=["dense", "sparse"])
    for text, got in zip(texts, batched, strict=True):
        alone = ALONE.encode([text], outputs=["dense", "sparse"])[0]
        np.testing.assert_allclose(got.dense, alone.dense, atol=1e-6)
        assert got.sparse is not None and alone.sparse is not None
        assert got.sparse.to_dict() == alone.sparse.to_dict() and got.tokens == alone.tokens
