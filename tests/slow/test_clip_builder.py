"""The torch-free CLIP graphs against transformers' CLIPModel on the tiny random CLIP: both towers within 1e-4, the
INT8 text tower close to fp32, both end-of-text rules and both activations; M3SEARCH_BUILDER=torch still exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3search.models.encoders.clip import ClipEncoder
from m3search.models.encoders.loader import load_encoder
from m3search.models.prepare import builder
from m3search.models.prepare.builder import clip
from m3search.models.runtime.backends import OrtSession
from m3search.settings import Settings, get_settings
from tests.tiny_clip import BOS, EOS

pytestmark = pytest.mark.slow
TEXTS = ["a photo of a cat", "an astronaut", "the quick brown fox jumps over the lazy dog " * 3, "x",
         "a black and white photo of a man with a camera"]


def _batch(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """The texts tokenized as CLIP does, padded with the end-of-text id into one batch of different lengths."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    ids = [e.ids for e in tok.encode_batch(TEXTS)]
    width, eos = max(map(len, ids)), tok.token_to_id(EOS)
    assert len({len(row) for row in ids}) == len(ids)  # every length differs
    input_ids = np.array([row + [eos] * (width - len(row)) for row in ids], dtype=np.int64)
    mask = np.array([[1] * len(row) + [0] * (width - len(row)) for row in ids], dtype=np.int64)
    return input_ids, mask


def _reference(directory: Path, ids: np.ndarray, mask: np.ndarray, pixels: np.ndarray) -> tuple[Any, Any]:
    import torch
    import transformers

    model = transformers.CLIPModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        text = model.get_text_features(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        image = model.get_image_features(pixel_values=torch.tensor(pixels))
    return getattr(text, "pooler_output", text).numpy(), getattr(image, "pooler_output", image).numpy()


def _variant(tiny_clip_dir: Path, target: Path, *, act: str, first_eos: bool) -> Path:
    """The tiny CLIP's weights under another config: ``act`` in both towers; with ``first_eos`` the config's
    eos_token_id is not 2, so transformers pools the first occurrence of that id (the start-of-text token here,
    so the two rules pick different positions) instead of the arg-max id."""
    directory = Path(shutil.copytree(tiny_clip_dir, target))
    config = json.loads((directory / "config.json").read_text())
    for part in ("text_config", "vision_config"):
        config[part]["hidden_act"] = act
    if first_eos:
        vocab = json.loads((directory / "vocab.json").read_text())
        config["text_config"]["eos_token_id"] = vocab[BOS]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


@pytest.mark.conformance
@pytest.mark.parametrize(("act", "first_eos"), [("quick_gelu", False), ("gelu", True)])
def test_built_towers_equal_transformers_clip(tiny_clip_dir: Path, tmp_path: Path, act: str,
                                              first_eos: bool) -> None:
    directory = _variant(tiny_clip_dir, tmp_path / "clip", act=act, first_eos=first_eos)
    facts = clip.build(directory, tmp_path / "out")
    ids, mask = _batch(directory)
    pixels = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
    text, image = _reference(directory, ids, mask, pixels)

    def run(name: str, feed: dict[str, np.ndarray]) -> np.ndarray:  # as encoders run it (INT8: text by text)
        return np.asarray(OrtSession(tmp_path / "out" / name, 1, spinning=False).run(None, feed)[0])

    feed = {"input_ids": ids, "attention_mask": mask}
    fp32, int8 = run("model.fp32.onnx", feed), run("model.int8.onnx", feed)
    assert np.abs(fp32 - text).max() < 1e-4
    assert np.abs(run(clip.VISION_FILE, {"pixel_values": pixels}) - image).max() < 1e-4
    assert _cosine(int8, fp32).min() >= 0.999  # per-channel weights, per-text / per-row activations
    length = int(mask[1].sum())
    alone = run("model.int8.onnx", {"input_ids": ids[1:2, :length], "attention_mask": mask[1:2, :length]})
    assert _cosine(alone, int8[1:2]).min() >= 0.99999  # a text's INT8 vector does not depend on its batch
    assert facts["projection_dim"] == 16 and facts["vision"]["image_size"] == 224


def _torch_settings(settings: Settings) -> Settings:
    return get_settings(home=settings.home, threads=2, builder="torch")


def test_prepare_builds_clip_without_torch_unless_told(tiny_clip_dir: Path, settings: Settings) -> None:
    ours = load_encoder("clip-vit-b-32", path=tiny_clip_dir, precision="fp32", settings=settings)
    theirs = load_encoder("clip-vit-b-32", path=tiny_clip_dir, precision="fp32", settings=_torch_settings(settings))
    assert isinstance(ours, ClipEncoder) and isinstance(theirs, ClipEncoder)
    manifest, old = ours.prepared.manifest, theirs.prepared.manifest
    assert (manifest["builder"], manifest["kind"], old["builder"]) == ("m3search", "clip", "torch")
    assert manifest["variants"]["onnxruntime/int8-dynamic"]["quantization"] == {**builder.QUANTIZATION,
                                                                                "embeddings": False}
    assert old["variants"]["onnxruntime/int8-dynamic"]["quantization"]["method"] != "build-time"
    for key in ("inputs", "outputs", "pad_token_id", "num_heads", "hidden_size", "projection_dim"):
        assert manifest[key] == old[key], key
    assert {k: v for k, v in manifest["vision"].items() if k != "bytes"} == {
        k: v for k, v in old["vision"].items() if k != "bytes"}
    np.testing.assert_allclose(np.stack([e.dense for e in ours.encode(TEXTS)]),
                               np.stack([e.dense for e in theirs.encode(TEXTS)]), atol=1e-4)
    pixels = np.random.default_rng(1).integers(0, 255, size=(2, 64, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.stack([e.dense for e in ours.encode_images(list(pixels))]),
                               np.stack([e.dense for e in theirs.encode_images(list(pixels))]), atol=1e-4)
