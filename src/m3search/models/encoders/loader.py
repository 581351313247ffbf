"""``load_encoder``: the façade that turns a model name into a ready (lazily loaded) encoder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from m3search.errors import M3SearchError
from m3search.models.encoders.base import Encoder
from m3search.models.encoders.bge_m3 import BGEM3Encoder
from m3search.models.encoders.clip import ClipEncoder
from m3search.models.encoders.hashing import HashEncoder
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.local import lookup_spec
from m3search.models.prepare.cache import PreparedModel, prepare_model
from m3search.models.registry import ModelSpec
from m3search.models.resolve import find_local, resolve_model
from m3search.models.runtime.sessions import RunOptions
from m3search.settings import Backend, Precision, Settings, get_settings


def load_encoder(
    name: str | None = None,
    *,
    path: str | Path | None = None,
    precision: Precision | None = None,
    backend: Backend | None = None,
    dim: int | None = None,
    max_length: int | None = None,
    threads: int | None = None,
    settings: Settings | None = None,
) -> Encoder:
    """Return an encoder for model ``name`` (default: ``M3SEARCH_DEFAULT_MODEL``).

    Construction is cheap: files are resolved, converted to ONNX (once, cached under ``M3SEARCH_HOME``)
    and loaded on the first encode. Errors about missing models therefore surface then, as
    :class:`~m3search.errors.ModelNotFoundError` with the commands that fix them.

    Args:
        name: registry name, Hugging Face repo id or local model name.
        path: a directory with the model's files (skips resolution).
        precision: "fp32", "bf16", "int8-dynamic" (default; alias "int8") or "int8-static"; each reduced
            precision is checked against fp32 on first use and refused below the fidelity threshold.
        backend: "onnxruntime", "openvino" or "auto" (default: settings; auto measures once per machine).
        dim: output dimension; must be one of the model's Matryoshka dims.
        max_length: default tokens per input (special tokens included); default: the model's max_tokens.
        threads: intra-op threads (default: settings, else the cores divided by ``settings.sessions``).
        settings: explicit settings (default: read from the environment now).
    """
    cfg = settings or get_settings()
    spec = lookup_spec(name or cfg.default_model, cfg)
    common: dict[str, object] = {
        "dim": dim,
        "max_length": max_length or (min(cfg.max_length, spec.max_tokens) if cfg.max_length else None),
        "batch_tokens": cfg.batch_tokens,
        "max_batch_size": cfg.max_batch_size,
    }
    if spec.family == "hash":
        return HashEncoder(spec, **common)
    source = Path(path) if path is not None else None
    if source is not None:
        spec = _sized_like(spec, source)
    elif spec.family == "clip":  # a local copy's sizes (a test model, a distilled variant) are the true ones
        spec = _clip_local(spec, cfg)

    def prepare() -> PreparedModel:
        return prepare_model(resolve_model(spec, cfg, source), cfg.home, builder_name=cfg.builder)

    kind = ClipEncoder if spec.family == "clip" else BGEM3Encoder if "colbert" in spec.outputs else OnnxEncoder
    return kind(spec, prepare, backend=backend or cfg.backend, precision=precision or cfg.precision,
                threads=threads or cfg.effective_threads(), options=run_options(cfg), **common)


def run_options(cfg: Settings) -> RunOptions:
    """The settings that shape how a prepared model runs (fidelity checks, calibration, thread spinning)."""
    return RunOptions(
        fidelity_threshold=cfg.fidelity_threshold,
        force_precision=cfg.force_precision,
        calibration_file=cfg.calibration_file,
        calibration_size=cfg.calibration_size,
        spinning=cfg.sessions == 1,
        home=cfg.home,
    )


def _sized_like(spec: ModelSpec, directory: Path) -> ModelSpec:
    """``spec`` with the dense dimension of the files in ``directory`` when they differ from the registry's (a
    smaller test model, a distilled variant): vectors, collections and fingerprints then say the true size. Such
    a model is not the Matryoshka-trained one, so its ``mrl_dims`` are dropped."""
    try:
        hidden = int(json.loads((directory / "config.json").read_text(encoding="utf-8")).get("hidden_size", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return spec
    if spec.family == "clip":
        return _clip_sized_like(spec, directory)
    if spec.pooling in ("cls", "mean", "last_token") and hidden > 0 and hidden != spec.dim:
        return replace(spec, dim=hidden, mrl_dims=())
    return spec


def _clip_sized_like(spec: ModelSpec, directory: Path) -> ModelSpec:
    """A CLIP ``spec`` with the projection dimension, text length and image size of the files in ``directory``."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        dim = int(config.get("projection_dim", spec.dim))
        tokens = int(config.get("text_config", {}).get("max_position_embeddings", spec.max_tokens))
        size = int(config.get("vision_config", {}).get("image_size", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return spec
    image = replace(spec.image, size=size) if spec.image is not None and size > 0 else spec.image
    return replace(spec, dim=dim if dim > 0 else spec.dim, max_tokens=tokens if tokens > 0 else spec.max_tokens,
                   image=image)


def _clip_local(spec: ModelSpec, cfg: Settings) -> ModelSpec:
    """``spec`` sized like the local copy that resolution finds, if any (problems surface later, on first use)."""
    try:
        found = find_local(spec, cfg)
    except M3SearchError:
        return spec
    return _clip_sized_like(spec, found.path) if found is not None else spec
