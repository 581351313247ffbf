"""The torch-free CLIP graphs on a small random checkpoint, against a numpy transcription of transformers'
CLIPModel (the torch reference itself is in tests/slow/test_clip_builder.py), and the builder's refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import ModelFormatError
from m3search.models.prepare import builder
from m3search.models.prepare.builder import clip
from m3search.models.prepare.builder.checkpoint import SafeTensors
from tests.unit.test_builder import _save_safetensors


def _clip_checkpoint(directory: Path, act: str = "quick_gelu", eos: int = 2) -> Path:
    """A CLIPModel checkpoint's names and shapes (hidden 8, one layer per tower, 8 px images in 4 px patches)."""
    rng = np.random.default_rng(0)
    tensors: dict[str, tuple[str, np.ndarray]] = {}

    def add(name: str, *shape: int) -> None:
        tensors[name] = ("F32", rng.normal(size=shape).astype(np.float32))

    for tower in ("text_model", "vision_model"):
        p = f"{tower}.encoder.layers.0."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add(f"{p}self_attn.{proj}.weight", 8, 8)
            add(f"{p}self_attn.{proj}.bias", 8)
        add(p + "mlp.fc1.weight", 16, 8), add(p + "mlp.fc1.bias", 16), add(p + "mlp.fc2.weight", 8, 16)
        add(p + "mlp.fc2.bias", 8)
        for norm in (p + "layer_norm1", p + "layer_norm2", f"{tower}.final_layer_norm", f"{tower}.pre_layrnorm",
                     f"{tower}.post_layernorm"):
            add(norm + ".weight", 8), add(norm + ".bias", 8)
    add("text_model.embeddings.token_embedding.weight", 20, 8)
    add("text_model.embeddings.position_embedding.weight", 10, 8)
    add("vision_model.embeddings.patch_embedding.weight", 8, 3, 4, 4)
    add("vision_model.embeddings.class_embedding", 8)
    add("vision_model.embeddings.position_embedding.weight", 5, 8)
    add("text_projection.weight", 4, 8), add("visual_projection.weight", 4, 8)
    directory.mkdir(parents=True, exist_ok=True)
    _save_safetensors(directory / "model.safetensors", tensors)
    sizes = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "hidden_act": act}
    config = {"model_type": "clip", "projection_dim": 4,
              "text_config": {**sizes, "vocab_size": 20, "max_position_embeddings": 10, "eos_token_id": eos},
              "vision_config": {**sizes, "image_size": 8, "patch_size": 4}}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "tokenizer.json").write_text("{}")
    return directory


def test_clip_with_an_activation_the_builder_lacks_goes_to_the_torch_exporter(tmp_path: Path) -> None:
    directory = _clip_checkpoint(tmp_path / "clip")
    assert builder.supports(directory, family="clip")
    assert not builder.supports(directory)  # a text-model spec never builds a CLIP checkpoint as BERT
    config = json.loads((directory / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "relu"
    with pytest.raises(ModelFormatError, match="vision hidden_act 'relu' is not supported"):
        clip.towers(config)
    (directory / "config.json").write_text(json.dumps(config))
    assert not builder.supports(directory, family="clip")


def test_a_truncated_clip_checkpoint_is_reported_with_the_fix(tmp_path: Path) -> None:
    from m3search.models.prepare.cache import prepare_model
    from m3search.models.registry import get_spec
    from m3search.models.resolve import ResolvedModel

    directory = _clip_checkpoint(tmp_path / "clip")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    resolved = ResolvedModel(get_spec("clip-vit-b-32"), directory, "path")
    with pytest.raises(ModelFormatError, match=r"incomplete or corrupt .*truncated.*models pull clip-vit-b-32"):
        prepare_model(resolved, tmp_path / "home")
    assert not list((tmp_path / "home").rglob("manifest.json"))  # nothing half-written is left to be used



def _norm(x: np.ndarray, t: dict[str, np.ndarray], name: str) -> np.ndarray:
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-5) * t[name + ".weight"] + t[name + ".bias"]


def _layer(h: np.ndarray, t: dict[str, np.ndarray], p: str, bias: np.ndarray, act: str) -> np.ndarray:
    """CLIPEncoderLayer: h + attention(layer_norm1(h)), then h + mlp(layer_norm2(h)); two heads of 4."""
    x = _norm(h, t, p + "layer_norm1")
    q, k, v = (((x @ t[f"{p}self_attn.{n}_proj.weight"].T + t[f"{p}self_attn.{n}_proj.bias"])
                .reshape(*x.shape[:2], 2, 4).transpose(0, 2, 1, 3)) for n in "qkv")
    scores = q @ k.transpose(0, 1, 3, 2) * 0.5 + bias
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    context = (probs / probs.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(x.shape)
    h = h + context @ t[p + "self_attn.out_proj.weight"].T + t[p + "self_attn.out_proj.bias"]
    inner = _norm(h, t, p + "layer_norm2") @ t[p + "mlp.fc1.weight"].T + t[p + "mlp.fc1.bias"]
    inner = inner / (1 + np.exp(-1.702 * inner)) if act == "quick_gelu" else np.asarray(
        [[[0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in row] for row in m] for m in inner])
    return np.asarray(h + inner @ t[p + "mlp.fc2.weight"].T + t[p + "mlp.fc2.bias"])


def _text(t: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray, eos: int, act: str) -> np.ndarray:
    length = ids.shape[1]
    h = t["text_model.embeddings.token_embedding.weight"][ids] + t["text_model.embeddings.position_embedding.weight"][
        :length]
    bias = np.triu(np.full((length, length), -1e9), 1)[None, None] + ((1 - mask) * -1e9)[:, None, None, :]
    h = _norm(_layer(h, t, "text_model.encoder.layers.0.", bias, act), t, "text_model.final_layer_norm")
    position = ids.argmax(1) if eos == 2 else (ids == eos).argmax(1)
    return np.asarray(h[np.arange(len(ids)), position] @ t["text_projection.weight"].T)


def _vision(t: dict[str, np.ndarray], pixels: np.ndarray, act: str) -> np.ndarray:
    patches = pixels.reshape(len(pixels), 3, 2, 4, 2, 4).transpose(0, 2, 4, 1, 3, 5).reshape(len(pixels), 4, 48)
    e = "vision_model.embeddings."
    patches = patches @ t[e + "patch_embedding.weight"].reshape(8, 48).T
    cls = np.broadcast_to(t[e + "class_embedding"], (len(pixels), 1, 8))
    h = _norm(np.concatenate([cls, patches], 1) + t[e + "position_embedding.weight"], t, "vision_model.pre_layrnorm")
    h = _layer(h, t, "vision_model.encoder.layers.0.", np.zeros(1), act)
    return np.asarray(_norm(h[:, 0], t, "vision_model.post_layernorm") @ t["visual_projection.weight"].T)


@pytest.mark.parametrize(("act", "eos"), [("quick_gelu", 2), ("gelu", 7)])
def test_clip_towers_equal_the_reference_computation(tmp_path: Path, act: str, eos: int) -> None:
    import onnxruntime as ort

    directory = _clip_checkpoint(tmp_path / "clip", act=act, eos=eos)
    file = SafeTensors(directory / "model.safetensors")
    tensors = {name: file.get(name).astype(np.float64) for name in file.names()}
    file.close()
    clip.write_text(directory, tmp_path / "text.onnx", int8=False)
    clip.write_vision(directory, tmp_path / "vision.onnx")
    # different lengths padded with the highest id; id 7 (the eos of the second config) comes before the end
    ids = np.array([[3, 7, 5, 19, 19, 19], [4, 8, 9, 6, 7, 19], [1, 19, 19, 19, 19, 19]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=np.int64)
    text = ort.InferenceSession(str(tmp_path / "text.onnx")).run(None, {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(text[0], _text(tensors, ids, mask, eos, act), atol=1e-4)
    pixels = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype(np.float32)
    image = ort.InferenceSession(str(tmp_path / "vision.onnx")).run(None, {"pixel_values": pixels})
    np.testing.assert_allclose(image[0], _vision(tensors, pixels.astype(np.float64), act), atol=1e-4)
