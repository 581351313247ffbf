"""Convert a Hugging Face checkpoint to ONNX (needs the ``export`` extra: torch, transformers, onnx).

This is the only module that imports torch, and only inside functions: serving never needs it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3search._optional import require
from m3search.errors import M3SearchError, ModelFormatError
from m3search.models.files import read_config
from m3search.models.registry import ModelSpec

OPSET = 17


@dataclass(frozen=True)
class ExportInfo:
    """What the exported graph looks like."""

    opset: int
    num_heads: int
    hidden_size: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]




M3_OUTPUTS = ("dense", "token_weights", "colbert")
M3_HEADS = {"colbert": "colbert_linear", "sparse": "sparse_linear"}


def load_head(src: Path, stem: str) -> dict[str, Any]:
    """A BGE-M3 head's state dict from ``STEM.safetensors`` or ``STEM.pt``, never unpickling objects."""
    torch = require("torch", "export", "Converting a model to ONNX")
    safe, pickled = src / f"{stem}.safetensors", src / f"{stem}.pt"
    try:
        if safe.is_file():
            from safetensors.torch import load_file

            state: dict[str, Any] = load_file(str(safe))
            return state
        if pickled.is_file():
            state = torch.load(str(pickled), map_location="cpu", weights_only=True)
            return state
    except Exception as exc:  # torch/safetensors raise many types for corrupt or hostile files
        raise ModelFormatError(f"cannot load the {stem} head of {src}: {exc}") from exc
    raise ModelFormatError(
        f"{src} lacks {stem}.pt (BGE-M3 needs colbert_linear.pt and sparse_linear.pt beside the model); "
        f"copy the complete BAAI/bge-m3 directory"
    )


def _m3_wrapper(base: Any, src: Path) -> Any:
    """Encoder + both heads in one graph: dense CLS state, per-token sparse weights, ColBERT vectors."""
    torch = require("torch", "export", "Converting a model to ONNX")
    hidden = int(base.config.hidden_size)
    colbert_state, sparse_state = load_head(src, M3_HEADS["colbert"]), load_head(src, M3_HEADS["sparse"])
    colbert = torch.nn.Linear(hidden, int(colbert_state["weight"].shape[0]))
    sparse = torch.nn.Linear(hidden, 1)
    try:
        colbert.load_state_dict(colbert_state)
        sparse.load_state_dict(sparse_state)
    except RuntimeError as exc:
        raise ModelFormatError(f"BGE-M3 heads in {src} do not fit hidden size {hidden}: {exc}") from exc

    class M3(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.base, self.colbert, self.sparse = base, colbert, sparse

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            h = self.base(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            return h[:, 0], torch.relu(self.sparse(h)).squeeze(-1), self.colbert(h[:, 1:])

    return M3().eval()


def _wrapper(spec: ModelSpec, src: Path) -> tuple[Any, tuple[str, ...]]:
    """A torch module whose forward takes the tokenizer's arrays and returns the graph outputs."""
    torch = require("torch", "export", "Converting a model to ONNX")
    transformers = require("transformers", "export", "Converting a model to ONNX")
    kwargs: dict[str, Any] = {"attn_implementation": "eager", "trust_remote_code": spec.trust_remote_code}
    if "colbert" in spec.outputs:
        return _m3_wrapper(transformers.AutoModel.from_pretrained(str(src), **kwargs), src), M3_OUTPUTS
    if spec.pooling == "splade":
        mlm = transformers.AutoModelForMaskedLM.from_pretrained(str(src), **kwargs)

        class Splade(torch.nn.Module):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.mlm = mlm

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                logits = self.mlm(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).logits
                weights = torch.log1p(torch.relu(logits)) * attention_mask.unsqueeze(-1).to(logits.dtype)
                return weights.max(dim=1).values

        return Splade().eval(), ("sparse",)

    base = transformers.AutoModel.from_pretrained(str(src), **kwargs)

    class Hidden(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.base = base

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.base(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    return Hidden().eval(), ("last_hidden_state",)


def export_onnx(spec: ModelSpec, src: Path, out: Path) -> ExportInfo:
    """Export ``src`` (a Hugging Face model directory) to the ONNX file ``out`` (fp32)."""
    torch = require("torch", "export", "Converting a model to ONNX")
    config = read_config(src)
    try:
        module, outputs = _wrapper(spec, src)
    except M3SearchError:
        raise
    except Exception as exc:  # transformers/safetensors raise many kinds for truncated or corrupt files
        raise ModelFormatError(
            f"cannot read the weights in {src} ({type(exc).__name__}: {exc}); the files are incomplete or corrupt: "
            f"copy them again or run 'm3search models pull {spec.name}'") from exc
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 9, 2, 1]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.long)
    types = torch.zeros_like(ids)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    for name in outputs:
        axes[name] = {0: "batch"} if name in ("sparse", "dense") else {0: "batch", 1: "sequence"}
    if "colbert" in axes:
        axes["colbert"] = {0: "batch", 1: "sequence_without_cls"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (the fused-attention optimizer needs its graphs);
        # its deprecation and tracer warnings say nothing actionable to users.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (ids, mask, types), str(out), input_names=list(inputs), output_names=list(outputs),
            dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    return ExportInfo(
        opset=OPSET,
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        inputs=inputs,
        outputs=outputs,
    )
