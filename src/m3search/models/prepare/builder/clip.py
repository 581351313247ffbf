"""CLIP's two towers written from a ``CLIPModel`` checkpoint's safetensors, as transformers computes them.

* Text (``model.fp32.onnx``, ``model.int8.onnx``): ``input_ids``, ``attention_mask`` -> ``text_embeds``, the
  end-of-text state after ``final_layer_norm``, projected by ``text_projection`` (``get_text_features``). The
  end-of-text position is found as transformers 4.57 finds it: the arg-max id when the config's ``eos_token_id`` is
  2 (the checkpoints written before transformers#24773, openai/clip-vit-* among them), else the first
  ``eos_token_id``. Attention is causal and skips padding. fp32 writes it as plain ONNX operators (ONNX Runtime
  and OpenVINO both run them exactly; OpenVINO ignores the causal forms of the fused ``Attention`` op); INT8 uses
  ONNX Runtime's ``MultiHeadAttention`` with ``unidirectional`` over one quantized QKV projection.
* Vision (``vision.fp32.onnx``): ``pixel_values`` ``[B, 3, S, S]`` -> ``image_embeds``: patch convolution, class
  token, positions, ``pre_layrnorm``, the layers (the fused ``Attention`` op: no mask), ``post_layernorm`` on the
  class token, ``visual_projection``.

Both towers are pre-LN transformers: ``h + attn(LN1(h))``, then ``h + mlp(LN2(h))``; each residual sum and the next
layer norm are Add and ``LayerNormalization`` (the fused ``SkipLayerNormalization`` is slower: :mod:`.encoder`).
Neither output is normalised: the encoder does that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m3search.errors import ModelFormatError
from m3search.models.files import read_config
from m3search.models.prepare.builder.attention import attend, heads_first, padding_bias
from m3search.models.prepare.builder.checkpoint import Checkpoint
from m3search.models.prepare.builder.encoder import activation, layer_norm
from m3search.models.prepare.builder.quantize import StaticPlan
from m3search.models.prepare.builder.writer import FLOAT, INT32, INT64, MS, OPSET, GraphWriter, writing

TEXT_INPUTS = ("input_ids", "attention_mask")
TEXT_OUTPUTS = ("text_embeds",)
VISION_INPUTS = ("pixel_values",)
VISION_OUTPUTS = ("image_embeds",)
VISION_FILE = "vision.fp32.onnx"
END_OF_TEXT = "<|endoftext|>"
_ACTIVATIONS = ("quick_gelu", "gelu")
_MASKED = -1e9  # added to the scores of masked keys: exp() of it is 0, and two of them stay finite
# transformers' CLIPTextConfig / CLIPVisionConfig defaults, for keys a saved config leaves out
_TEXT_DEFAULTS = {"hidden_size": 512, "num_attention_heads": 8, "num_hidden_layers": 12, "eos_token_id": 49407,
                  "max_position_embeddings": 77}
_VISION_DEFAULTS = {"hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 12, "image_size": 224,
                    "patch_size": 32, "num_channels": 3}


@dataclass(frozen=True)
class Tower:
    """One tower's architecture facts; ``prefix`` is its tensors' (``text_model.`` or ``vision_model.``)."""

    prefix: str
    hidden: int
    heads: int
    layers: int
    eps: float
    act: str
    extra: dict[str, int]  # text: eos_token_id, max_position_embeddings; vision: image_size, patch_size, ...

    @classmethod
    def from_config(cls, config: dict[str, Any], part: str, defaults: dict[str, int]) -> Tower:
        section = {**defaults, **(config.get(f"{part}_config") or {}), **(config.get(f"{part}_config_dict") or {})}
        act = str(section.get("hidden_act", "quick_gelu"))
        if act not in _ACTIVATIONS:
            raise ModelFormatError(f"CLIP {part} hidden_act {act!r} is not supported by the torch-free builder "
                                   f"({' or '.join(_ACTIVATIONS)} are)")
        try:
            tower = cls(prefix=f"{part}_model.", hidden=int(section["hidden_size"]),
                        heads=int(section["num_attention_heads"]), layers=int(section["num_hidden_layers"]),
                        eps=float(section.get("layer_norm_eps", 1e-5)), act=act,
                        extra={k: int(section[k]) for k in defaults if k not in ("hidden_size",)})
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"the CLIP {part} config is not usable: {exc}") from exc
        if tower.heads <= 0 or tower.hidden % tower.heads:
            raise ModelFormatError(f"CLIP {part} hidden_size {tower.hidden} is not a multiple of its heads")
        return tower


def towers(config: dict[str, Any]) -> tuple[Tower, Tower]:
    """(text, vision) of a CLIP ``config.json``."""
    if config.get("model_type") != "clip":
        raise ModelFormatError(f"model_type {config.get('model_type')!r} is not CLIP")
    return Tower.from_config(config, "text", _TEXT_DEFAULTS), Tower.from_config(config, "vision", _VISION_DEFAULTS)


def _skip_norm(w: GraphWriter, ckpt: Checkpoint, x: str, residual: str, bias: str, norm: str,
               eps: float) -> tuple[str, str]:
    """(``norm(residual + x + bias)``, ``residual + x + bias``), plain ops (see :func:`.encoder._skip_norm`)."""
    total = str(w.op("Add", [w.op("Add", [x, w.weight(bias, ckpt.get(bias))]), residual]))
    return layer_norm(w, ckpt, total, norm, eps), total


def _activate(w: GraphWriter, x: str, bias: np.ndarray, act: str, name: str) -> str:
    if act == "gelu":
        return activation(w, x, bias, "gelu", name)
    return str(w.op("QuickGelu", [w.op("Add", [x, w.weight(name, bias)])], domain=MS, alpha=1.702))


def _qkv(ckpt: Checkpoint, p: str) -> tuple[np.ndarray, np.ndarray]:
    parts = ("q_proj", "k_proj", "v_proj")
    return (np.concatenate([ckpt.get(f"{p}self_attn.{n}.weight") for n in parts], axis=0),
            np.concatenate([ckpt.get(f"{p}self_attn.{n}.bias") for n in parts]))


Attend = Callable[[str, str], str]  # (normed hidden state, layer prefix) -> attention context [B, S, H]


def layers(w: GraphWriter, ckpt: Checkpoint, t: Tower, h: str, attend: Attend, final_norm: str) -> str:
    """The pre-LN layers over ``h``; returns ``final_norm`` of the last residual stream."""
    x = layer_norm(w, ckpt, h, f"{t.prefix}encoder.layers.0.layer_norm1", t.eps)
    for i in range(t.layers):
        p = f"{t.prefix}encoder.layers.{i}."
        out = w.linear(attend(x, p), ckpt.get(p + "self_attn.out_proj.weight"), p + "out_proj")
        x, h = _skip_norm(w, ckpt, out, h, p + "self_attn.out_proj.bias", p + "layer_norm2", t.eps)
        inner = w.linear(x, ckpt.get(p + "mlp.fc1.weight"), p + "fc1")
        inner = _activate(w, inner, ckpt.get(p + "mlp.fc1.bias"), t.act, p + "fc1.bias")
        out = w.linear(inner, ckpt.get(p + "mlp.fc2.weight"), p + "fc2", rows=True)
        norm = f"{t.prefix}encoder.layers.{i + 1}.layer_norm1" if i + 1 < t.layers else final_norm
        x, h = _skip_norm(w, ckpt, out, h, p + "mlp.fc2.bias", norm, t.eps)
    return x


def _text_attend(w: GraphWriter, ckpt: Checkpoint, t: Tower, mask: str, rows: str) -> Attend:
    """Causal self-attention that skips padding (plain operators in fp32, MultiHeadAttention in INT8)."""
    size = t.hidden // t.heads
    if w.int8:
        mask32 = w.op("Cast", [mask], to=INT32)

        def fused(x: str, p: str) -> str:
            weight, bias = _qkv(ckpt, p)
            q, k, v = w.op("Split", [w.linear(x, weight, p + "qkv"), w.const([t.hidden] * 3)], outputs=3,
                           axis=-1)
            return str(w.op("MultiHeadAttention", [q, k, v, w.weight(p + "qkv.bias", bias), mask32], domain=MS,
                            num_heads=t.heads, unidirectional=1))

        return fused
    length = w.op("Gather", [rows, w.const([1])])
    causal = np.triu(np.full((t.extra["max_position_embeddings"],) * 2, _MASKED, np.float32), 1)
    causal = w.op("Slice", [w.weight("causal_bias", causal), w.const([0, 0]),
                            w.op("Concat", [length, length], axis=0), w.const([0, 1])])
    padding = padding_bias(w, mask, _MASKED)
    scores_bias = str(w.op("Add", [causal, w.op("Unsqueeze", [padding, w.const([1, 2])])]))  # [B, 1, S, S]

    def plain(x: str, p: str) -> str:
        weight, bias = _qkv(ckpt, p)
        qkv = w.op("Add", [w.linear(x, weight, p + "qkv"), w.weight(p + "qkv.bias", bias)])
        q, k, v = w.op("Split", [qkv, w.const([t.hidden] * 3)], outputs=3, axis=-1)
        return attend(w, heads_first(w, q, t.heads, [0, 2, 1, 3]), heads_first(w, k, t.heads, [0, 2, 3, 1]),
                      heads_first(w, v, t.heads, [0, 2, 1, 3]), scores_bias, size, t.hidden)

    return plain


def _project(w: GraphWriter, ckpt: Checkpoint, pooled: str, name: str) -> str:
    """``pooled @ name.T`` in fp32 (one row per input: quantizing it would save nothing)."""
    return str(w.op("MatMul", [pooled, w.weight(name, np.ascontiguousarray(ckpt.get(name).T))]))


def _end_of_text(w: GraphWriter, t: Tower, ids: str) -> str:
    """The position ``[B, 1]`` whose state transformers pools."""
    eos = t.extra["eos_token_id"]
    if eos == 2:  # legacy configs: the highest id, CLIP's end-of-text token
        return str(w.op("ArgMax", [w.op("Cast", [ids], to=INT32)], axis=1, keepdims=1))
    found = w.op("Cast", [w.op("Equal", [ids, w.const(eos)])], to=INT32)
    return str(w.op("ArgMax", [found], axis=1, keepdims=1))


def _text_graph(w: GraphWriter, ckpt: Checkpoint, t: Tower) -> None:
    ids = w.input("input_ids", INT64, ["batch", "sequence"])
    mask = w.input("attention_mask", INT64, ["batch", "sequence"])
    rows = str(w.op("Shape", [ids]))
    emb = t.prefix + "embeddings."
    tokens = w.op("Gather", [w.weight(emb + "token_embedding.weight", ckpt.get(emb + "token_embedding.weight")),
                             ids])
    positions = w.op("Slice", [w.weight(emb + "position_embedding.weight", ckpt.get(emb + "position_embedding.weight")),
                               w.const([0]), w.op("Gather", [rows, w.const([1])]), w.const([0])])
    h = str(w.op("Add", [tokens, positions]))
    hidden = layers(w, ckpt, t, h, _text_attend(w, ckpt, t, mask, rows), t.prefix + "final_layer_norm")
    pooled = w.op("GatherND", [hidden, _end_of_text(w, t, ids)], batch_dims=1)
    w.output(_project(w, ckpt, pooled, "text_projection.weight"), "text_embeds", ["batch", "projection"])


def _vision_graph(w: GraphWriter, ckpt: Checkpoint, t: Tower) -> None:
    size, patch = t.extra["image_size"], t.extra["patch_size"]
    pixels = w.input("pixel_values", FLOAT, ["batch", t.extra["num_channels"], size, size])
    emb = t.prefix + "embeddings."
    conv = w.op("Conv", [pixels, w.weight(emb + "patch_embedding.weight", ckpt.get(emb + "patch_embedding.weight"))],
                kernel_shape=[patch, patch], strides=[patch, patch])
    patches = w.op("Transpose", [w.op("Reshape", [conv, w.const([0, t.hidden, -1])])], perm=[0, 2, 1])
    positions = ckpt.get(emb + "position_embedding.weight")
    if positions.shape[0] != (size // patch) ** 2 + 1:
        raise ModelFormatError(f"CLIP vision positions {positions.shape[0]} do not fit {size} px in {patch} px patches")
    first = (ckpt.get(emb + "class_embedding") + positions[0]).reshape(1, 1, t.hidden)
    batch = w.op("Slice", [w.op("Shape", [pixels]), w.const([0]), w.const([1])])
    cls = w.op("Expand", [w.weight(emb + "class_embedding", first), w.op("Concat", [batch, w.const([1, 1])],
                                                                           axis=0)])
    rest = w.op("Add", [patches, w.weight(emb + "position_embedding.weight", positions[1:].copy())])
    h = layer_norm(w, ckpt, w.op("Concat", [cls, rest], axis=1), t.prefix + "pre_layrnorm", t.eps)
    def attend(x: str, p: str) -> str:
        weight, bias = _qkv(ckpt, p)
        return str(w.op("Attention", [x, w.matrix(p + "qkv", np.ascontiguousarray(weight.T)),
                                      w.weight(p + "qkv.bias", bias)], domain=MS, num_heads=t.heads))

    hidden = layers(w, ckpt, t, h, attend, t.prefix + "post_layernorm")
    pooled = w.op("Gather", [hidden, w.const(0)], axis=1)
    w.output(_project(w, ckpt, pooled, "visual_projection.weight"), "image_embeds", ["batch", "projection"])


def _write(src: Path, out: Path, graph: Callable[[GraphWriter, Checkpoint, Tower], None], tower: int, *,
           int8: bool = False, weights_only: bool = False, static: StaticPlan | None = None,
           probe: bool = False) -> None:
    chosen = towers(read_config(src))[tower]
    ckpt = Checkpoint(src, prefix="")
    with writing(out, ckpt, int8=int8, weights_only=weights_only, static=static, probe=probe) as writer:
        graph(writer, ckpt, chosen)


def write_text(src: Path, out: Path, *, int8: bool, weights_only: bool = False, static: StaticPlan | None = None,
               probe: bool = False) -> None:
    """The text tower (fp32, INT8 for ONNX Runtime, or INT8 weights only for OpenVINO) to ``out`` (+ ``.data``)."""
    _write(src, out, _text_graph, 0, int8=int8, weights_only=weights_only, static=static, probe=probe)


def write_vision(src: Path, out: Path) -> None:
    """The vision tower (fp32) to ``out`` (+ ``.data``)."""
    _write(src, out, _vision_graph, 1)


def pad_token_id(src: Path, config: dict[str, Any]) -> int:
    """The end-of-text token pads (as the reference tokenizer does); the text config's pad id otherwise."""
    from tokenizers import Tokenizer

    try:
        found = Tokenizer.from_file(str(src / "tokenizer.json")).token_to_id(END_OF_TEXT)
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise ModelFormatError(f"cannot load tokenizer {src / 'tokenizer.json'}: {exc}") from exc
    if found is not None:
        return int(found)
    return int((config.get("text_config") or {}).get("pad_token_id") or 0)


def build(src: Path, work: Path) -> dict[str, Any]:
    """Both text graphs and the vision graph into ``work``; returns the facts for the manifest (the vision
    entry's size is the caller's to add)."""
    config = read_config(src)
    text, vision = towers(config)
    write_text(src, work / "model.fp32.onnx", int8=False)
    write_text(src, work / "model.int8.onnx", int8=True)
    write_vision(src, work / VISION_FILE)
    ckpt = Checkpoint(src, prefix="")
    try:
        projection = ckpt.shape("text_projection.weight")[0]
    finally:
        ckpt.close()
    return {"opset": OPSET, "inputs": list(TEXT_INPUTS), "outputs": list(TEXT_OUTPUTS), "num_heads": text.heads,
            "hidden_size": text.hidden, "projection_dim": projection, "pad_token_id": pad_token_id(src, config),
            "vision": {"file": VISION_FILE, "inputs": list(VISION_INPUTS), "outputs": list(VISION_OUTPUTS),
                       "image_size": vision.extra["image_size"], "precision": "fp32"}}
