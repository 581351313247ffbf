"""The BERT / XLM-RoBERTa encoder as ONNX Runtime's fused operators, written from the checkpoint's tensors.

Per layer: self-attention (:mod:`.attention`: QKV in one weight), Add (projection bias and residual) and
``LayerNormalization``, and the feed-forward block as MatMul → ``BiasGelu`` → MatMul (its input quantized per row in
dynamic INT8) → Add → ``LayerNormalization``.
Embeddings: word (int8 rows when the model asks), position (XLM-R numbers positions after the padding index, from
the ids, as the reference does) and token type (folded into the position table when the graph has no
``token_type_ids`` input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from m3search.errors import ModelFormatError
from m3search.models.prepare.builder.attention import AttentionMask, attention_mask, self_attention
from m3search.models.prepare.builder.checkpoint import Checkpoint
from m3search.models.prepare.builder.quantize import quantize_rows
from m3search.models.prepare.builder.writer import FLOAT, INT64, MS, GraphWriter

_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")


@dataclass(frozen=True)
class EncoderConfig:
    """The architecture facts the graph needs, from ``config.json``."""

    kind: str  # "bert" or "xlm-roberta"
    hidden: int
    heads: int
    layers: int
    eps: float
    act: str
    pad_id: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderConfig:
        kind = str(config.get("model_type", ""))
        if kind not in ("bert", "xlm-roberta", "roberta"):
            raise ModelFormatError(f"model_type {kind!r} has no torch-free builder (BERT and XLM-RoBERTa do)")
        act = str(config.get("hidden_act", "gelu"))
        if act not in _ACTIVATIONS:
            raise ModelFormatError(f"hidden_act {act!r} is not supported by the torch-free builder")
        if str(config.get("position_embedding_type", "absolute")) != "absolute":
            raise ModelFormatError("only absolute position embeddings are supported by the torch-free builder")
        return cls(
            kind="bert" if kind == "bert" else "xlm-roberta", hidden=int(config["hidden_size"]),
            heads=int(config["num_attention_heads"]), layers=int(config["num_hidden_layers"]),
            eps=float(config.get("layer_norm_eps", 1e-12)), act=act, pad_id=int(config.get("pad_token_id") or 0),
        )


@dataclass(frozen=True)
class Encoded:
    """Names in the graph: the last hidden state ``[B, S, H]`` and the int64 mask."""

    hidden: str
    mask: str


def activation(w: GraphWriter, x: str, bias: np.ndarray, act: str, name: str) -> str:
    """``act(x + bias)`` with the fused bias ops where ONNX Runtime has them."""
    b = w.weight(name, bias)
    if act == "gelu":
        return str(w.op("BiasGelu", [x, b], domain=MS))
    if act == "relu":
        return str(w.op("Relu", [w.op("Add", [x, b])]))
    return str(w.op("FastGelu", [x, b], domain=MS))


def _word_embeddings(w: GraphWriter, ckpt: Checkpoint, ids: str, int8: bool) -> str:
    name = "embeddings.word_embeddings.weight"
    shape = ckpt.shape(name)
    if not int8:
        table = w.weight_blocks(name, shape, np.float32, ckpt.rows(name))
        return str(w.op("Gather", [table, ids]))
    scales: list[np.ndarray] = []

    def blocks() -> Any:
        for block in ckpt.rows(name):
            quantized, scale = quantize_rows(block)
            scales.append(scale)
            yield quantized

    table = w.weight_blocks(name + ".int8", shape, np.int8, blocks())
    scale = w.weight(name + ".scale", np.concatenate(scales))
    rows = w.op("Cast", [w.op("Gather", [table, ids])], to=FLOAT)
    return str(w.op("Mul", [rows, w.op("Unsqueeze", [w.op("Gather", [scale, ids]), w.const([-1])])]))


def embeddings(w: GraphWriter, ckpt: Checkpoint, cfg: EncoderConfig, *, token_types: bool,
               int8_table: bool) -> Encoded:
    ids = w.input("input_ids", INT64, ["batch", "sequence"])
    mask = w.input("attention_mask", INT64, ["batch", "sequence"])
    word = _word_embeddings(w, ckpt, ids, int8_table and (w.int8 or w.weights_only))
    positions = ckpt.get("embeddings.position_embeddings.weight")
    types = ckpt.get("embeddings.token_type_embeddings.weight") if ckpt.has(
        "embeddings.token_type_embeddings.weight") else np.zeros((1, cfg.hidden), np.float32)
    if not token_types:
        positions = positions + types[0]
    table = w.weight("embeddings.position_embeddings.weight", positions)
    if cfg.kind == "xlm-roberta":  # positions count non-padding tokens, starting after the padding index
        real = w.op("Cast", [w.op("Not", [w.op("Equal", [ids, w.const(cfg.pad_id)])])], to=INT64)
        index = w.op("Add", [w.op("Mul", [w.op("CumSum", [real, w.const(1)]), real]), w.const(cfg.pad_id)])
    else:
        ones = w.op("Cast", [w.op("Equal", [ids, ids])], to=INT64)
        index = w.op("Sub", [w.op("CumSum", [ones, w.const(1)]), w.const(1)])
    total = w.op("Add", [word, w.op("Gather", [table, index])])
    if token_types:
        type_ids = w.input("token_type_ids", INT64, ["batch", "sequence"])
        total = w.op("Add", [total, w.op("Gather", [w.weight("embeddings.token_type_embeddings.weight", types),
                                                     type_ids])])
    hidden = layer_norm(w, ckpt, total, "embeddings.LayerNorm", cfg.eps)
    return Encoded(hidden, mask)


def layer_norm(w: GraphWriter, ckpt: Checkpoint, x: str, prefix: str, eps: float, *, prefixed: bool = True) -> str:
    gamma = w.weight(prefix + ".weight", ckpt.get(prefix + ".weight", prefixed=prefixed))
    beta = w.weight(prefix + ".bias", ckpt.get(prefix + ".bias", prefixed=prefixed))
    return str(w.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps))


def _skip_norm(w: GraphWriter, ckpt: Checkpoint, x: str, skip: str, bias: str, prefix: str, eps: float) -> str:
    """``LayerNorm(x + bias + skip)`` as plain Add and LayerNormalization: ONNX Runtime's fused
    ``SkipLayerNormalization`` ran 7x slower than the two (a [250, 384] input: 244 against 35 us) and took a quarter of
    MiniLM's time; sessions keep it unfused (:func:`m3search.models.prepare.onnx.build_session`)."""
    return layer_norm(w, ckpt, w.op("Add", [w.op("Add", [x, bias]), skip]), prefix, eps)


def _attention(w: GraphWriter, ckpt: Checkpoint, cfg: EncoderConfig, h: str, mask: AttentionMask, p: str) -> str:
    parts = ("query", "key", "value")
    weight = np.concatenate([ckpt.get(f"{p}.attention.self.{n}.weight") for n in parts], axis=0)
    bias = np.concatenate([ckpt.get(f"{p}.attention.self.{n}.bias") for n in parts])
    return self_attention(w, h, weight, bias, mask, cfg.heads, p)


def encoder_layers(w: GraphWriter, ckpt: Checkpoint, cfg: EncoderConfig, encoded: Encoded) -> Encoded:
    """All transformer layers over the embeddings; returns the last hidden state."""
    mask = attention_mask(w, encoded.mask)
    h = encoded.hidden
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"
        context = _attention(w, ckpt, cfg, h, mask, p)
        projected = w.linear(context, ckpt.get(p + ".attention.output.dense.weight"), p + ".attention.output")
        bias = w.weight(p + ".attention.output.dense.bias", ckpt.get(p + ".attention.output.dense.bias"))
        h = _skip_norm(w, ckpt, projected, h, bias, p + ".attention.output.LayerNorm", cfg.eps)
        inner = w.linear(h, ckpt.get(p + ".intermediate.dense.weight"), p + ".intermediate")
        inner = activation(w, inner, ckpt.get(p + ".intermediate.dense.bias"), cfg.act, p + ".intermediate.bias")
        out = w.linear(inner, ckpt.get(p + ".output.dense.weight"), p + ".output", rows=True)
        bias = w.weight(p + ".output.dense.bias", ckpt.get(p + ".output.dense.bias"))
        h = _skip_norm(w, ckpt, out, h, bias, p + ".output.LayerNorm", cfg.eps)
    return Encoded(h, encoded.mask)
