"""CLIP checkpoints to two ONNX graphs with torch (the ``export`` extra): the text tower and the vision tower.

The fallback for checkpoints m3search's torch-free builder (:mod:`.builder.clip`) cannot read (pickled
``pytorch_model.bin`` only), and the path ``M3SEARCH_BUILDER=torch`` forces.

Both come from one ``transformers.CLIPModel``: ``input_ids``, ``attention_mask`` -> ``text_embeds`` (the projected
end-of-text state, ``get_text_features``) and ``pixel_values`` -> ``image_embeds`` (the projected class token,
``get_image_features``). Neither is normalised in the graph; the encoder does that. The text tower is written as
``model.fp32.onnx`` so the usual precision variants, and their fidelity checks, apply to it unchanged; the vision
tower runs in fp32 only (``vision.fp32.onnx``): the fidelity sample is text, so an INT8 vision graph could not be
checked the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from m3search._optional import require
from m3search.errors import M3SearchError, ModelFormatError
from m3search.models.files import read_config
from m3search.models.prepare import onnx as onnx_tools
from m3search.models.prepare.builder.clip import (
    TEXT_INPUTS,
    TEXT_OUTPUTS,
    VISION_FILE,
    VISION_INPUTS,
    VISION_OUTPUTS,
    pad_token_id,
)
from m3search.models.prepare.export import OPSET


def projected(features: Any) -> Any:
    """The projected embedding from ``get_text_features``/``get_image_features``: transformers 4 returns the tensor,
    transformers 5 an output object holding it as ``pooler_output``."""
    return getattr(features, "pooler_output", features)


def _towers(src: Path) -> tuple[Any, Any, Any]:
    """(text module, vision module, CLIPModel) in eval mode."""
    torch = require("torch", "export", "Converting a model to ONNX")
    transformers = require("transformers", "export", "Converting a model to ONNX")
    try:
        model = transformers.CLIPModel.from_pretrained(str(src), attn_implementation="eager").eval()
    except Exception as exc:  # transformers/safetensors raise many kinds for truncated, corrupt or foreign files
        raise ModelFormatError(
            f"cannot read a CLIP model in {src} ({type(exc).__name__}: {exc}); the files are incomplete, corrupt or "
            f"not CLIP: copy them again or run 'm3search models pull clip-vit-b-32'") from exc

    class Text(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.clip = model  # a submodule: the tracer sees its weights as parameters, not constants

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return projected(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))

    class Vision(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, pixel_values: Any) -> Any:
            return projected(self.clip.get_image_features(pixel_values=pixel_values))

    return Text().eval(), Vision().eval(), model


def export_clip(src: Path, text_out: Path, vision_out: Path) -> dict[str, Any]:
    """Write the two fp32 graphs; returns facts for the manifest (sizes, end-of-text id)."""
    torch = require("torch", "export", "Converting a model to ONNX")
    text, vision, model = _towers(src)
    text_config, vision_config = model.config.text_config, model.config.vision_config
    eos = int(text_config.eos_token_id) if text_config.eos_token_id is not None else 2
    ids = torch.tensor([[0, 5, 6, 7, eos], [0, 8, 9, eos, eos]], dtype=torch.long) % text_config.vocab_size
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.long)
    size = int(vision_config.image_size)
    pixels = torch.randn(2, 3, size, size)
    text_axes = {name: {0: "batch", 1: "sequence"} for name in TEXT_INPUTS}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings say nothing actionable to users
        torch.onnx.export(text, (ids, mask), str(text_out), input_names=list(TEXT_INPUTS),
                          output_names=list(TEXT_OUTPUTS), dynamic_axes={**text_axes, "text_embeds": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
        torch.onnx.export(vision, (pixels,), str(vision_out), input_names=list(VISION_INPUTS),
                          output_names=list(VISION_OUTPUTS),
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return {"projection_dim": int(model.config.projection_dim), "image_size": size,
            "num_heads": int(text_config.num_attention_heads), "hidden_size": int(text_config.hidden_size),
            "max_position_embeddings": int(text_config.max_position_embeddings)}


def export_towers(src: Path, work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Export both towers, quantize the text tower dynamically; returns (manifest facts, INT8 quantization)."""
    fp32, vision, int8 = work / "model.fp32.onnx", work / VISION_FILE, work / "model.int8.onnx"
    try:
        facts = export_clip(src, fp32, vision)
    except M3SearchError:
        raise
    except Exception as exc:  # the exporter raises assorted errors for graphs it cannot trace
        raise ModelFormatError(f"cannot export the CLIP model in {src} to ONNX ({type(exc).__name__}: {exc})") from exc
    onnx_tools.quantize_int8(fp32, int8, embeddings=False)
    return {
        "opset": OPSET, "inputs": list(TEXT_INPUTS), "outputs": list(TEXT_OUTPUTS), "fused": False,
        "builder": "torch", "torch_version": require("torch", "export", "Converting a model to ONNX").__version__,
        "num_heads": facts["num_heads"], "hidden_size": facts["hidden_size"],
        "pad_token_id": pad_token_id(src, read_config(src)),
        "vision": {"file": vision.name, "inputs": list(VISION_INPUTS), "outputs": list(VISION_OUTPUTS),
                   "image_size": facts["image_size"], "precision": "fp32"},
        "projection_dim": facts["projection_dim"],
    }, dict(onnx_tools.QUANTIZATION)
