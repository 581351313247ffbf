"""The torch-free model builder: ONNX graphs written straight from a checkpoint's safetensors.

:func:`build` writes ``model.fp32.onnx`` and ``model.int8.onnx`` (each with its ``.data`` file) in two passes over
the checkpoint, one tensor in memory at a time; INT8 weights are quantized as they are written. Families: BERT and
XLM-RoBERTa encoders (``hidden``), BGE-M3 with its ColBERT and sparse heads (``m3``), SPLADE's masked-LM head
(``splade``), sequence-classification rerankers (``classifier``) and CLIP (``clip``: the text tower as the two graphs
above, and ``vision.fp32.onnx`` beside them). Anything else (other architectures, pickled
``pytorch_model.bin``-only checkpoints) goes through the torch exporter of the ``export`` extra. Encoders wider than
:data:`~.writer.NARROW` also get ``model.int8.rows.onnx``, their INT8 graph quantized per row for batches of short
texts, sharing ``model.int8.onnx.data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from m3search.errors import ModelFormatError
from m3search.models.files import read_config
from m3search.models.prepare.builder import clip
from m3search.models.prepare.builder.heads import Kind, write_graph
from m3search.models.prepare.builder.writer import NARROW, rows_graph
from m3search.models.registry import ModelSpec

FAMILIES = ("bert", "xlm-roberta", "roberta")
QUANTIZATION = {
    "method": "build-time",
    "weights": "int8",
    "per_channel": True,
    "symmetric": True,
    "activations": "uint8",
    "activation_scale": ("per text at run time, each text run by itself (per row for the feed-forward output "
                         "layer; in graphs wider than 768, texts of at most 128 tokens run in padded batches of "
                         "a graph quantized per row): a text's vector does not depend on its batch"),
    "ops": ["QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MultiHeadAttention"],
}


def graph_kind(spec: ModelSpec) -> Kind:
    """What the graph of an embedding model outputs."""
    if spec.family == "clip":
        return "clip"
    if "colbert" in spec.outputs:
        return "m3"
    if spec.pooling == "splade":
        return "splade"
    return "hidden"


def supports(src: Path, *, family: str = "") -> bool:
    """Whether the builder can read this checkpoint: safetensors weights of a BERT-like architecture, or of a
    ``CLIPModel`` for the ``clip`` family (whose activations it knows: others go to the torch exporter)."""
    try:
        config = read_config(src)
        if family == "clip":
            clip.towers(config)
    except ModelFormatError:
        return False
    return (config.get("model_type") in (("clip",) if family == "clip" else FAMILIES)
            and any(p.stem not in ("colbert_linear", "sparse_linear") for p in src.glob("*.safetensors")))


def build(kind: Kind, src: Path, work: Path, *, int8_embeddings: bool) -> dict[str, Any]:
    """Write both graphs (CLIP: and its vision tower) into ``work``; returns the facts for the manifest (inputs,
    outputs, sizes)."""
    if kind == "clip":
        return clip.build(src, work)
    facts = write_graph(kind, src, work / "model.fp32.onnx", int8=False)
    int8 = work / "model.int8.onnx"
    write_graph(kind, src, int8, int8=True, int8_embeddings=int8_embeddings)
    if facts["hidden_size"] > NARROW:  # short texts in padded batches, per row (writer.py)
        write_graph(kind, src, rows_graph(int8), int8=True, int8_embeddings=int8_embeddings, rows=True, share=int8)
    return facts
