"""Prepare a resolved checkpoint for serving: ONNX export, graph fusion, INT8, cached with a manifest.

Layout: ``M3SEARCH_HOME/onnx/NAME/KEY/`` with ``model.fp32.onnx``, ``model.int8.onnx``, ``tokenizer.json``
and ``manifest.json`` (written last: a directory without it is incomplete and is rebuilt). KEY is derived
from the source files' names, sizes and modification times, so new weights get a new directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from m3search.errors import ConfigError, ModelFormatError
from m3search.models import onnx as onnx_tools
from m3search.models.resolve import ResolvedModel
from m3search.settings import Precision

MANIFEST = "manifest.json"
_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class PreparedModel:
    """A model ready for ONNX Runtime: graph, tokenizer and the manifest that describes them."""

    directory: Path
    manifest: dict[str, Any]

    def onnx_path(self, precision: Precision) -> Path:
        return self.directory / str(self.manifest["variants"][precision]["file"])

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"

    @property
    def pad_id(self) -> int:
        return int(self.manifest.get("pad_token_id", 0))


def _source_files(directory: Path) -> list[Path]:
    """Files of a model directory, without the ``.cache`` folder that huggingface_hub keeps in local dirs."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.relative_to(directory).parts)


def source_key(directory: Path) -> str:
    """A short key that changes when any source file changes (name, size or mtime)."""
    digest = hashlib.sha256()
    for path in _source_files(directory):
        stat = path.stat()
        digest.update(f"{path.relative_to(directory)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _weights_sha256(directory: Path) -> str:
    for name in ("model.safetensors", "pytorch_model.bin", "model.onnx"):
        path = directory / name
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
            return digest.hexdigest()
    raise ModelFormatError(f"{directory} holds no weights file")


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def cache_dir(resolved: ResolvedModel, home: Path) -> Path:
    return home / "onnx" / resolved.spec.name / source_key(resolved.path)


def load_prepared(directory: Path) -> PreparedModel | None:
    """The prepared model in ``directory`` if its manifest is complete, else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return PreparedModel(directory, manifest)


def prepare_model(resolved: ResolvedModel, home: Path, *, force: bool = False) -> PreparedModel:
    """Export, fuse and quantize ``resolved`` once; later calls return the cached result.

    Concurrent callers in one process wait for the first; files are moved into place atomically.
    """
    target = cache_dir(resolved, home)
    with _lock_for(target):
        existing = None if force else load_prepared(target)
        if existing is not None:
            return existing
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
                manifest = _build(resolved, Path(tmp))
                target.mkdir(exist_ok=True)
                for path in Path(tmp).iterdir():
                    os.replace(path, target / path.name)
                _write_json(target / MANIFEST, manifest)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the prepared model under {target.parent} ({exc}); free disk space or set "
                f"M3SEARCH_HOME to a writable directory"
            ) from exc
        return PreparedModel(target, manifest)


def _build(resolved: ResolvedModel, work: Path) -> dict[str, Any]:
    from m3search.models.export import export_onnx, read_config

    spec, src = resolved.spec, resolved.path
    raw = work / "raw" / "model.onnx"  # a folder: graphs over 2 GB are exported as many external files
    info = export_onnx(spec, src, raw)
    fp32 = work / "model.fp32.onnx"
    fused = onnx_tools.fuse_graph(raw, fp32, info.num_heads, info.hidden_size)
    if not fused:
        _copy_graph(raw, fp32)
    shutil.rmtree(raw.parent)
    int8 = work / "model.int8.onnx"
    onnx_tools.quantize_int8(fp32, int8, embeddings=spec.int8_embeddings)
    shutil.copyfile(src / "tokenizer.json", work / "tokenizer.json")
    config = read_config(src)
    return {
        "model": spec.name,
        "hf_repo": spec.hf_repo,
        "revision": spec.revision,
        "source": str(src),
        "source_kind": resolved.source,
        "source_sha256": _weights_sha256(src),
        "m3search_version": _version("m3search"),
        "onnxruntime_version": _version("onnxruntime"),
        "torch_version": _version("torch"),
        "opset": info.opset,
        "inputs": list(info.inputs),
        "outputs": list(info.outputs),
        "fused": fused,
        "pad_token_id": int(config.get("pad_token_id") or 0),
        "variants": {
            "fp32": {"file": fp32.name, "bytes": _graph_bytes(fp32), "quantization": None},
            "int8": {
                "file": int8.name,
                "bytes": int8.stat().st_size,
                "quantization": {**onnx_tools.QUANTIZATION, "embeddings": spec.int8_embeddings},
            },
        },
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _graph_bytes(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def _copy_graph(src: Path, dst: Path) -> None:
    import onnx

    large = onnx_tools.is_large(src)
    model = onnx.load(str(src))
    onnx.save_model(model, str(dst), save_as_external_data=large, location=dst.name + ".data")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
