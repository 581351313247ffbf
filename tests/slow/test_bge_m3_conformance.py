"""BGE-M3 conformance: m3search's fp32 outputs equal FlagEmbedding's BGEM3FlagModel on identical weights (a tiny
random BGE-M3 with the real XLM-R tokenizer), from empty inputs up to BGE-M3's 8192 tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3search import BGEM3Encoder, load_encoder
from m3search.models.encoders.scores import compute_score
from m3search.settings import Settings
from tests.references import import_or_skip

pytestmark = pytest.mark.slow

TEXTS = [
    "What is BGE M3?",
    "Defination of BM25",
    "BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
    "BM25 is a bag-of-words retrieval function that ranks a set of documents based on the query terms",
    "Qu'est-ce que Debian ? Debian est un système d'exploitation libre.",
    "Wie aktualisiere ich mein System auf eine neue Debian-Version?",
    "东京是日本的首都。",
    "",
    "word " * 1500,  # 1502 tokens: kept up to 1024, beyond the 512 that other libraries silently cut to
]
MAX_LENGTH = 1024
# Two texts at BGE-M3's full context: one just under 8192 tokens, one over it (cut to 8192 by both sides). No
# trailing space: FlagEmbedding's fast tokenizer turns one into an extra "▁" token, m3search does not, as SentencePiece
# and transformers' XLMRobertaTokenizer (docs/bge-m3.md, "Tokenization note").
LONG_MAX_LENGTH = 8192
_PARAGRAPH = " ".join(TEXTS[2:7])
LONG_TEXTS = [" ".join([_PARAGRAPH] * 85), " ".join([_PARAGRAPH] * 95)]  # 8162 and 9122 tokens


@pytest.fixture(scope="module")
def reference(tiny_m3_dir: Path) -> Any:
    flag = import_or_skip("FlagEmbedding", "FlagEmbedding (the 'reference' extra) is not installed")
    return flag.BGEM3FlagModel(str(tiny_m3_dir), use_fp16=False, devices="cpu")


@pytest.fixture
def m3(tiny_m3_dir: Path, settings: Settings) -> BGEM3Encoder:
    encoder = load_encoder("bge-m3", path=tiny_m3_dir, precision="fp32", settings=settings)
    assert isinstance(encoder, BGEM3Encoder)
    return encoder


def _ours(m3: BGEM3Encoder) -> list[Any]:
    return m3.encode(TEXTS, outputs=["dense", "sparse", "colbert"], max_length=MAX_LENGTH)


def _assert_equal_outputs(ours: list[Any], expected: dict[str, Any]) -> None:
    """The issue's bars: dense cos >= 0.99999, identical sparse keys within 1e-4, ColBERT cos >= 0.9999 per token."""
    for i, emb in enumerate(ours):
        assert emb.dense is not None and emb.sparse is not None and emb.colbert is not None
        assert float(emb.dense @ expected["dense_vecs"][i]) >= 0.99999, f"dense differs for text {i}"
        ref_sparse = {int(k): float(v) for k, v in expected["lexical_weights"][i].items()}
        assert set(emb.sparse.to_dict()) == set(ref_sparse), f"sparse keys differ for text {i}"
        for token, weight in emb.sparse.to_dict().items():
            assert abs(weight - ref_sparse[token]) <= 1e-4, f"sparse weight of token {token} in text {i}"
        ref_colbert = expected["colbert_vecs"][i]
        assert emb.colbert.shape == ref_colbert.shape and emb.colbert.shape[0] == emb.tokens - 1
        assert (emb.colbert * ref_colbert).sum(axis=1).min() >= 0.9999, f"ColBERT differs for text {i}"


@pytest.mark.conformance
def test_dense_sparse_colbert_equal_the_reference(m3: BGEM3Encoder, reference: Any) -> None:
    expected = reference.encode(TEXTS, batch_size=4, max_length=MAX_LENGTH, return_dense=True,
                                return_sparse=True, return_colbert_vecs=True)
    ours = _ours(m3)
    _assert_equal_outputs(ours, expected)
    assert ours[-1].tokens == MAX_LENGTH and ours[-1].truncated
    assert sum(len(e.sparse) for e in ours) > 20  # the check above is not vacuous


@pytest.mark.conformance
def test_scores_equal_the_reference(m3: BGEM3Encoder, reference: Any) -> None:
    pairs = [(q, p) for q in TEXTS[:2] for p in TEXTS[2:5]]
    weights = (0.4, 0.2, 0.4)
    for (query, passage), ours in zip(pairs, m3.compute_score(pairs, weights=weights), strict=True):
        expected = reference.compute_score([query, passage], weights_for_different_modes=list(weights))
        for key, value in ours.as_dict().items():
            assert abs(value - float(expected[key])) <= 1e-4, key


@pytest.mark.conformance
def test_inputs_up_to_8192_tokens_equal_the_reference(m3: BGEM3Encoder, reference: Any) -> None:
    expected = reference.encode(LONG_TEXTS, batch_size=1, max_length=LONG_MAX_LENGTH, return_dense=True,
                                return_sparse=True, return_colbert_vecs=True)
    ours = m3.encode(LONG_TEXTS, outputs=["dense", "sparse", "colbert"], max_length=LONG_MAX_LENGTH)
    _assert_equal_outputs(ours, expected)
    assert 8000 < ours[0].tokens < LONG_MAX_LENGTH and not ours[0].truncated  # near the limit, not cut
    assert ours[1].tokens == LONG_MAX_LENGTH and ours[1].truncated
    pair = (TEXTS[0], LONG_TEXTS[0])
    theirs = reference.compute_score([pair], max_passage_length=LONG_MAX_LENGTH, weights_for_different_modes=[1, 1, 1])
    for key, value in m3.compute_score([pair], weights=(1.0, 1.0, 1.0), max_passage_length=LONG_MAX_LENGTH)[0] \
            .as_dict().items():
        assert abs(value - float(theirs[key][0])) <= 1e-4, key


@pytest.mark.conformance
def test_reference_score_helpers_agree(m3: BGEM3Encoder, reference: Any) -> None:
    q, p = m3.encode(TEXTS[:2] + TEXTS[2:3], outputs=["dense", "sparse", "colbert"])[::2]
    scores = compute_score(q, p)
    assert q.colbert is not None and p.colbert is not None and q.sparse is not None and p.sparse is not None
    assert abs(scores.colbert - float(reference.colbert_score(q.colbert, p.colbert))) <= 1e-5
    lexical = reference.compute_lexical_matching_score(
        {str(k): v for k, v in q.sparse.to_dict().items()}, {str(k): v for k, v in p.sparse.to_dict().items()}
    )
    assert abs(scores.sparse - lexical) <= 1e-6


@pytest.mark.conformance
def test_token_strings_match_the_reference(m3: BGEM3Encoder, reference: Any) -> None:
    emb = m3.encode([TEXTS[0]], outputs=["sparse"])[0]
    assert emb.sparse is not None
    expected = reference.convert_id_to_token([{str(k): v for k, v in emb.sparse.to_dict().items()}])
    assert m3.sparse_tokens(emb.sparse) == pytest.approx(expected)


def test_unrequested_outputs_are_not_computed(m3: BGEM3Encoder) -> None:
    dense_only = m3.encode(TEXTS[:3])[0]
    assert dense_only.dense is not None and dense_only.sparse is None and dense_only.colbert is None
    sparse_only = m3.encode(TEXTS[:3], outputs=["sparse"])[0]
    assert sparse_only.dense is None and sparse_only.sparse is not None


def test_long_document_gets_a_batch_of_its_own(m3: BGEM3Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, int]] = []
    original = m3.encode_batch

    def spy(batch: Any, outputs: Any) -> Any:
        shapes.append(batch.input_ids.shape)
        return original(batch, outputs)

    monkeypatch.setattr(m3, "encode_batch", spy)
    long_text = "Debian " * 3000  # 6002 tokens
    results = m3.encode([long_text, "short", "also short"], outputs=["dense", "colbert"], max_length=8192)
    assert shapes == [(1, 6002), (2, 4)]
    assert results[0].tokens == 6002 and not results[0].truncated
    assert results[0].colbert is not None and results[0].colbert.shape == (6001, 32)
    alone = m3.encode([long_text], outputs=["dense"], max_length=8192)[0]
    assert alone.dense is not None and results[0].dense is not None
    np.testing.assert_allclose(results[0].dense, alone.dense, atol=1e-5)


def test_int8_agreement_and_size(tiny_m3_dir: Path, m3: BGEM3Encoder, settings: Settings) -> None:
    int8 = load_encoder("bge-m3", path=tiny_m3_dir, settings=settings)
    outputs: Any = ["dense", "sparse", "colbert"]
    exact, approx = _ours(m3), int8.encode(TEXTS, outputs=outputs, max_length=MAX_LENGTH)
    dense_cos = [float(a.dense @ b.dense) for a, b in zip(exact, approx, strict=True)]
    assert np.mean(dense_cos) >= 0.98
    manifest = int8.prepared.manifest  # type: ignore[attr-defined]
    assert manifest["variants"]["onnxruntime/int8-dynamic"]["quantization"]["embeddings"] is True
    variants = manifest["variants"]
    assert variants["onnxruntime/int8-dynamic"]["bytes"] < variants["onnxruntime/fp32"]["bytes"] / 3


def test_cli_embed_sparse_colbert(tiny_m3_dir: Path, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from m3search.cli.app import main

    with pytest.raises(SystemExit) as info:
        main(["embed", "--model", "bge-m3", "--model-path", str(tiny_m3_dir), "--precision", "fp32", "--sparse",
              "--colbert",
              "--json", TEXTS[0], TEXTS[2]])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert info.value.code in (0, None) and len(lines) == 2
    first = lines[0]
    assert len(first["dense"]) == 32 and len(first["colbert"]) == first["tokens"] - 1
    assert all(isinstance(k, str) and int(k) >= 0 and v > 0 for k, v in first["sparse"].items())
    with pytest.raises(SystemExit) as info:
        main(["embed", "--model", "all-minilm-l6-v2", "--sparse", "x"])
    assert info.value.code == 2 and "cannot produce sparse" in capsys.readouterr().err
