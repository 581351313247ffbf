"""Real BAAI/bge-m3: reproduce the example outputs published in the FlagEmbedding README.

The weights (2.27 GB) cannot be downloaded on machines without internet access; point M3SEARCH_BGE_M3_PATH at
a directory with the official files to run these tests. The README's figures were computed in fp16, hence 1e-3.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from m3search import BGEM3Encoder, load_encoder, stack_dense
from m3search.settings import Settings

_PATH = os.environ.get("M3SEARCH_BGE_M3_PATH", "")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_weights,
    pytest.mark.skipif(
        not _PATH or not Path(_PATH, "config.json").is_file(),
        reason="real BGE-M3 weights are not available offline: set M3SEARCH_BGE_M3_PATH to a BAAI/bge-m3 directory",
    ),
]

SENTENCES_1 = ["What is BGE M3?", "Defination of BM25"]
SENTENCES_2 = [
    "BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
    "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms appearing in "
    "each document",
]
README_SCORES = {
    "colbert": [0.7796499729156494, 0.4621465802192688, 0.4523794651031494, 0.7898575067520142],
    "sparse": [0.195556640625, 0.00879669189453125, 0.0, 0.1802978515625],
    "dense": [0.6259765625, 0.347412109375, 0.349853515625, 0.67822265625],
    "sparse+dense": [0.482503205537796, 0.23454029858112335, 0.2332356721162796, 0.5122477412223816],
    "colbert+sparse+dense": [0.6013619303703308, 0.3255828022956848, 0.32089319825172424, 0.6232916116714478],
}
README_TOKENS = [
    {"What": 0.08356, "is": 0.0814, "B": 0.1296, "GE": 0.252, "M": 0.1702, "3": 0.2695, "?": 0.04092},
    {"De": 0.05005, "fin": 0.1368, "ation": 0.04498, "of": 0.0633, "BM": 0.2515, "25": 0.3335},
]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> BGEM3Encoder:
    settings = Settings(home=tmp_path_factory.mktemp("real-home"))
    encoder = load_encoder("bge-m3", path=_PATH, precision="fp32", settings=settings)
    assert isinstance(encoder, BGEM3Encoder)
    return encoder


def test_dense_similarity_matrix(real: BGEM3Encoder) -> None:
    similarity = stack_dense(real.encode(SENTENCES_1)) @ stack_dense(real.encode(SENTENCES_2)).T
    np.testing.assert_allclose(similarity, [[0.6265, 0.3477], [0.3499, 0.678]], atol=1e-3)


def test_lexical_weights_and_scores(real: BGEM3Encoder) -> None:
    first = real.encode(SENTENCES_1, outputs=["sparse"])
    for emb, expected in zip(first, README_TOKENS, strict=True):
        assert emb.sparse is not None
        tokens = real.sparse_tokens(emb.sparse)
        assert set(tokens) == set(expected)
        for token, weight in expected.items():
            assert tokens[token] == pytest.approx(weight, abs=1e-3)


def test_compute_score_matches_readme(real: BGEM3Encoder) -> None:
    pairs = [(q, p) for q in SENTENCES_1 for p in SENTENCES_2]
    scores = real.compute_score(pairs, weights=(0.4, 0.2, 0.4), max_passage_length=128)
    for key, expected in README_SCORES.items():
        np.testing.assert_allclose([s.as_dict()[key] for s in scores], expected, atol=1e-3, err_msg=key)
