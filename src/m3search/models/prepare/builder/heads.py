"""What each kind of model puts on top of the encoder, and the build entry point.

| kind | outputs |
| --- | --- |
| hidden | ``last_hidden_state`` (pooling is done by the encoder class) |
| m3 | ``dense`` (CLS state), ``token_weights`` (relu(sparse head) per token), ``colbert`` (head on tokens after CLS) |
| splade | ``sparse``: max over tokens of log(1 + relu(MLM logits)), padding masked |
| classifier | ``logits`` (batch,): BERT pooler + classifier, or XLM-R's classification head, on the first token |
| clip | ``text_embeds``: CLIP's projected text tower (:mod:`.clip`, which also writes the vision tower) |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from m3search.errors import ModelFormatError
from m3search.models.files import read_config
from m3search.models.prepare.builder import clip
from m3search.models.prepare.builder.attention import padding_bias
from m3search.models.prepare.builder.checkpoint import Checkpoint, read_head
from m3search.models.prepare.builder.encoder import (
    Encoded,
    EncoderConfig,
    activation,
    embeddings,
    encoder_layers,
    layer_norm,
)
from m3search.models.prepare.builder.quantize import StaticPlan
from m3search.models.prepare.builder.writer import OPSET, GraphWriter, writing

Kind = Literal["hidden", "m3", "splade", "classifier", "clip"]
OUTPUTS: dict[str, tuple[str, ...]] = {
    "hidden": ("last_hidden_state",), "m3": ("dense", "token_weights", "colbert"), "splade": ("sparse",),
    "classifier": ("logits",), "clip": ("text_embeds",),
}


def _first_token(w: GraphWriter, h: str) -> str:
    return str(w.op("Gather", [h, w.const(0)], axis=1))


def _m3(w: GraphWriter, ckpt: Checkpoint, enc: Encoded) -> None:
    colbert, sparse = read_head(ckpt.directory, "colbert_linear"), read_head(ckpt.directory, "sparse_linear")
    hidden = w.op("Shape", [enc.hidden])
    if colbert["weight"].shape[1] != sparse["weight"].shape[1]:
        raise ModelFormatError(f"BGE-M3 heads in {ckpt.directory} do not fit the model's hidden size")
    w.output(_first_token(w, enc.hidden), "dense", ["batch", "hidden"])
    weights = w.op("MatMul", [enc.hidden, w.weight("sparse_linear.weight", sparse["weight"].T.copy())])
    weights = w.op("Relu", [w.op("Add", [weights, w.weight("sparse_linear.bias", sparse["bias"])])])
    w.output(w.op("Squeeze", [weights, w.const([-1])]), "token_weights", ["batch", "sequence"])
    after_cls = w.op("Slice", [enc.hidden, w.const([1]), w.op("Gather", [hidden, w.const([1])]), w.const([1])])
    vectors = w.linear(after_cls, colbert["weight"], "colbert_linear.weight")
    vectors = w.op("Add", [vectors, w.weight("colbert_linear.bias", colbert["bias"])])
    w.output(vectors, "colbert", ["batch", "sequence_without_cls", "colbert_dim"])


def _splade(w: GraphWriter, ckpt: Checkpoint, cfg: EncoderConfig, enc: Encoded) -> None:
    head = "cls.predictions."
    t = w.linear(enc.hidden, ckpt.get(head + "transform.dense.weight", prefixed=False), "mlm.transform")
    t = activation(w, t, ckpt.get(head + "transform.dense.bias", prefixed=False), cfg.act, "mlm.transform.bias")
    t = layer_norm(w, ckpt, t, head + "transform.LayerNorm", cfg.eps, prefixed=False)
    decoder = (ckpt.get(head + "decoder.weight", prefixed=False) if ckpt.has(head + "decoder.weight", prefixed=False)
               else ckpt.get("embeddings.word_embeddings.weight"))  # tied to the word embeddings
    bias_name = head + "decoder.bias" if ckpt.has(head + "decoder.bias", prefixed=False) else head + "bias"
    logits = w.linear(t, decoder, "mlm.decoder")
    # log(1 + relu(x)) never decreases, so its max over tokens is taken of the logits' max: one [B, S, V] pass
    # instead of four. Padding gets -1e4 first, which relu turns into the reference's masked 0.
    masked = w.op("Add", [logits, w.op("Unsqueeze", [padding_bias(w, enc.mask), w.const([-1])])])
    top = w.reduce("ReduceMax", masked, [1], keepdims=False)
    top = w.op("Add", [top, w.weight("mlm.decoder.bias", ckpt.get(bias_name, prefixed=False))])
    pooled = w.op("Log", [w.op("Add", [w.op("Relu", [top]), w.const(1.0, np.float32)])])
    w.output(pooled, "sparse", ["batch", "vocabulary"])


def _dense_tanh(w: GraphWriter, x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
    y = w.linear(x, weight, name)
    return str(w.op("Tanh", [w.op("Add", [y, w.weight(name + ".bias", bias)])]))


def _classifier(w: GraphWriter, ckpt: Checkpoint, cfg: EncoderConfig, enc: Encoded) -> None:
    first = _first_token(w, enc.hidden)
    if cfg.kind == "bert":
        pooled = _dense_tanh(w, first, ckpt.get("pooler.dense.weight"), ckpt.get("pooler.dense.bias"), "pooler")
        out_w, out_b = "classifier.weight", "classifier.bias"
    else:
        pooled = _dense_tanh(w, first, ckpt.get("classifier.dense.weight", prefixed=False),
                             ckpt.get("classifier.dense.bias", prefixed=False), "classifier.dense")
        out_w, out_b = "classifier.out_proj.weight", "classifier.out_proj.bias"
    weight = ckpt.get(out_w, prefixed=False)
    if weight.shape[0] != 1:
        raise ModelFormatError(f"{ckpt.directory} is a classifier with {weight.shape[0]} labels; a reranker has one")
    logits = w.op("MatMul", [pooled, w.weight(out_w, weight.T.copy())])
    logits = w.op("Add", [logits, w.weight(out_b, ckpt.get(out_b, prefixed=False))])
    w.output(w.op("Squeeze", [logits, w.const([-1])]), "logits", ["batch"])


def write_graph(kind: Kind, src: Path, out: Path, *, int8: bool, int8_embeddings: bool = False,
                weights_only: bool = False, static: StaticPlan | None = None, probe: bool = False,
                rows: bool = False, share: Path | None = None) -> dict[str, Any]:
    """Write one graph of the checkpoint in ``src`` to ``out`` (+ ``.data``): fp32, int8, int8 weights only, static
    INT8 (``static``, with ``int8`` for ONNX Runtime or ``weights_only`` for OpenVINO), the calibration probe, or
    the rows graph (``rows``, sharing the data file of the INT8 graph ``share``)."""
    if kind == "clip":  # the text tower; clip.build writes the vision tower beside it
        clip.write_text(src, out, int8=int8, weights_only=weights_only, static=static, probe=probe)
        return {"outputs": list(OUTPUTS[kind])}
    config = read_config(src)
    cfg = EncoderConfig.from_config(config)
    ckpt = Checkpoint(src)
    with writing(out, ckpt, int8=int8, weights_only=weights_only, static=static, probe=probe, rows=rows,
                 share=share) as writer:
        token_types = kind == "classifier" and cfg.kind == "bert"
        enc = encoder_layers(writer, ckpt, cfg, embeddings(writer, ckpt, cfg, token_types=token_types,
                                                            int8_table=int8_embeddings))
        if kind == "hidden":
            writer.output(enc.hidden, "last_hidden_state", ["batch", "sequence", "hidden"])
        elif kind == "m3":
            _m3(writer, ckpt, enc)
        elif kind == "splade":
            _splade(writer, ckpt, cfg, enc)
        else:
            _classifier(writer, ckpt, cfg, enc)
    inputs = ["input_ids", "attention_mask", *(["token_type_ids"] if token_types else [])]
    return {"opset": OPSET, "num_heads": cfg.heads, "hidden_size": cfg.hidden, "inputs": inputs,
            "outputs": list(OUTPUTS[kind]), "pad_token_id": cfg.pad_id}

