"""One session factory for every model kind: the cross-encoder and CLIP's vision tower run on ONNX Runtime or
OpenVINO like the encoders, "auto" measures once and caches, and the reranker's fidelity gate covers OpenVINO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import ConfigError, FidelityError
from m3search.models.encoders.clip import ClipEncoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.rerank.cross_encoder import CrossEncoderReranker, load_reranker
from m3search.models.rerank.fidelity import METRIC
from m3search.models.runtime.backends import OpenVinoSession, OrtSession
from m3search.settings import Settings
from tests.tiny_clip import build_tokenizer
from tests.tiny_reranker import build_tiny_reranker
from tests.unit.test_builder_clip import _clip_checkpoint

MINILM = "ms-marco-minilm-l-6-v2"
QUERY = "heat shock on a plate"
PASSAGES = ["the cat sat on the mat", "heat shock wave plate", "a man is playing guitar", "jet flow", "hot plate heat",
            "cold cold"]


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reranker(tmp_path_factory.mktemp("tiny-reranker"))


def _reranker(directory: Path, home: Path, backend: str, precision: str = "fp32",
              threshold: float = 0.5) -> CrossEncoderReranker:
    settings = Settings(home=home, fidelity_threshold=threshold)
    return load_reranker(MINILM, path=directory, precision=precision, backend=backend,  # type: ignore[arg-type]
                         settings=settings)


def test_an_unknown_reranker_backend_is_a_config_error(reranker_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend"):
        _reranker(reranker_dir, tmp_path, "tensorrt")


def test_the_reranker_runs_on_openvino_like_on_onnxruntime(reranker_dir: Path, tmp_path: Path) -> None:
    ort = _reranker(reranker_dir, tmp_path, "onnxruntime")
    ov = _reranker(reranker_dir, tmp_path, "openvino")
    expected = np.asarray(ort.logits(QUERY, PASSAGES))
    assert np.ptp(expected) > 0.5  # the tiny model's scores spread: comparing them checks something
    np.testing.assert_allclose(ov.logits(QUERY, PASSAGES), expected, atol=1e-4)
    assert isinstance(ort._load()[2], OrtSession) and isinstance(ov._load()[2], OpenVinoSession)
    manifest = ov._load()[0].manifest
    assert manifest["variants"]["openvino/fp32"]["rerank_fidelity"][METRIC] > 0.999  # checked, like the encoders'


def test_the_fidelity_gate_covers_openvino_int8(reranker_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FidelityError, match="openvino/int8-dynamic"):
        _reranker(reranker_dir, tmp_path, "openvino", "int8-dynamic", threshold=0.9999).logits(QUERY, PASSAGES)
    figures = _reranker(reranker_dir, tmp_path, "openvino", "int8-dynamic", threshold=0.5)._load()[0].variant(
        "openvino", "int8-dynamic")
    assert figures is not None and 0.5 < figures["rerank_fidelity"][METRIC] < 0.9999  # measured once, kept


def test_auto_measures_each_backend_once_and_caches(reranker_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    rated: list[str] = []
    measure = CrossEncoderReranker._pairs_per_s

    def spy(self: CrossEncoderReranker, session: object, *args: object) -> float:
        rated.append(type(session).__name__)
        return measure(self, session, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(CrossEncoderReranker, "_pairs_per_s", spy)
    first = _reranker(reranker_dir, tmp_path, "auto")
    scores = first.logits(QUERY, PASSAGES)
    assert sorted(rated) == ["OpenVinoSession", "OrtSession"]
    assert first.backend in ("onnxruntime", "openvino")
    (entry,) = json.loads((tmp_path / "autotune.json").read_text()).values()
    assert entry["backend"] == first.backend and set(entry["per_s"]) == {"onnxruntime", "openvino"}
    rated.clear()
    second = _reranker(reranker_dir, tmp_path, "auto")
    np.testing.assert_allclose(second.logits(QUERY, PASSAGES), scores, atol=1e-6)
    assert rated == [] and second.backend == first.backend


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = _clip_checkpoint(tmp_path_factory.mktemp("tiny-clip") / "clip")
    build_tokenizer(directory)  # the vision tower needs none, but preparing the model reads one
    return directory


def test_the_vision_tower_runs_on_openvino_like_on_onnxruntime(clip_dir: Path, tmp_path: Path) -> None:
    pixels = list((np.random.default_rng(0).random((3, 12, 10, 3)) * 255).astype(np.uint8))
    vectors, sessions = {}, {}
    for backend in ("onnxruntime", "openvino"):
        encoder = load_encoder("clip-vit-b-32", path=clip_dir, backend=backend, precision="fp32",
                               settings=Settings(home=tmp_path))
        assert isinstance(encoder, ClipEncoder)
        vectors[backend] = np.stack([e.dense for e in encoder.encode_images(pixels)])  # type: ignore[misc]
        sessions[backend] = encoder.vision_session
    assert isinstance(sessions["onnxruntime"], OrtSession) and isinstance(sessions["openvino"], OpenVinoSession)
    assert np.abs(vectors["onnxruntime"] - vectors["openvino"]).max() < 1e-5
    assert np.abs(vectors["onnxruntime"][0] - vectors["onnxruntime"][1]).max() > 1e-3  # distinct images differ
