"""Prepare a resolved checkpoint for serving: ONNX export, graph fusion, INT8, cached with a manifest.

Layout: ``M3SEARCH_HOME/onnx/NAME/KEY/`` with ``model.fp32.onnx`` (the plain export: ONNX Runtime fuses it
when the session loads, OpenVINO and NNCF read it as is), ``model.int8.onnx`` (fused offline, then dynamic
INT8), ``tokenizer.json`` and ``manifest.json`` (written last: a directory without it is incomplete and is
rebuilt). Other precision modes and the OpenVINO files are added on first use by :mod:`.variants`, which
records them, and every mode's fidelity to fp32, in the manifest. KEY is derived from the source files'
names, sizes and modification times, so new weights get a new directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from m3search.errors import ConfigError, ModelFormatError
from m3search.locks import KeyedLocks
from m3search.memory import release_large_allocations, trim_heap
from m3search.models.prepare import builder
from m3search.models.prepare import onnx as onnx_tools
from m3search.models.prepare.builder.heads import Kind
from m3search.models.prepare.builder.writer import rows_graph
from m3search.models.registry import ModelSpec
from m3search.models.resolve import ResolvedModel
from m3search.settings import canonical_precision

MANIFEST = "manifest.json"
FORMAT = 3  # manifests of another format are rebuilt (3: graphs written by the torch-free builder)
# Threads of this process preparing the same directory (or writing the same cache file) take turns; the registry
# belongs to this module and holds a lock only while a path is in use (see KeyedLocks).
_PATH_LOCKS = KeyedLocks()
# (spec, checkpoint directory, output graph) -> ExportInfo; the default exports an embedding model
Exporter = Callable[[ModelSpec, Path, Path], Any]


@dataclass(frozen=True)
class PreparedModel:
    """A model ready for ONNX Runtime: graph, tokenizer and the manifest that describes them."""

    directory: Path
    manifest: dict[str, Any]

    def variant(self, backend: str, precision: str) -> dict[str, Any] | None:
        """The manifest entry of one backend/precision variant, if it was built."""
        entry: dict[str, Any] | None = self.manifest["variants"].get(f"{backend}/{precision}")
        return entry

    def path(self, backend: str, precision: str) -> Path:
        """The graph file of a built variant."""
        entry = self.variant(backend, precision)
        if entry is None:
            raise ConfigError(f"{backend}/{precision} of '{self.manifest['model']}' has not been built")
        return self.directory / str(entry["file"])

    def onnx_path(self, precision: str) -> Path:
        """The ONNX Runtime graph of ``precision``."""
        return self.path("onnxruntime", canonical_precision(precision))

    def record(self, backend: str, precision: str, entry: dict[str, Any]) -> None:
        """Merge ``entry`` into the variant's manifest record and rewrite the manifest atomically.

        The manifest is re-read first, so records written meanwhile by other processes are kept.
        """
        key = f"{backend}/{precision}"
        with lock_for(self.directory):
            current = load_prepared(self.directory)
            manifest = current.manifest if current is not None else self.manifest
            manifest["variants"][key] = {**manifest["variants"].get(key, {}), **entry}
            write_json(self.directory / MANIFEST, manifest)
            self.manifest["variants"][key] = manifest["variants"][key]

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


def lock_for(path: Path) -> AbstractContextManager[None]:
    """Mutual exclusion, among this process's threads, for work on ``path`` (``with lock_for(path): ...``)."""
    return _PATH_LOCKS.hold(path)


def cache_dir(resolved: ResolvedModel, home: Path, builder_name: str = "auto") -> Path:
    key = source_key(resolved.path)
    return home / "onnx" / resolved.spec.name / (key if builder_name == "auto" else f"{key}-{builder_name}")


def load_prepared(directory: Path) -> PreparedModel | None:
    """The prepared model in ``directory`` if its manifest is complete, else None."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("format") != FORMAT:
        return None
    return PreparedModel(directory, manifest)


def prepare_model(resolved: ResolvedModel, home: Path, *, force: bool = False,
                  exporter: Exporter | None = None, kind: Kind | None = None,
                  builder_name: str = "auto") -> PreparedModel:
    """Build the fp32 and INT8 graphs of ``resolved`` once; later calls return the cached result.

    BERT-like and CLIP checkpoints with safetensors weights are written by the torch-free :mod:`.builder` (``kind``
    says which outputs; by default the embedding model's). Anything else goes through the torch exporter of the
    ``export`` extra (``exporter`` replaces the embedding-model export: cross-encoders export their logits);
    ``builder_name="torch"`` forces that path (kept apart in the cache).

    Concurrent callers in one process wait for the first; files are moved into place atomically.
    """
    target = cache_dir(resolved, home, builder_name)
    with lock_for(target):
        existing = None if force else load_prepared(target)
        if existing is not None:
            return existing
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            release_large_allocations()  # weight matrices come and go: their memory must go back to the system
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
                manifest = _build(resolved, Path(tmp), exporter, kind, torch=builder_name == "torch")
                target.mkdir(exist_ok=True)
                for path in Path(tmp).iterdir():
                    os.replace(path, target / path.name)
                write_json(target / MANIFEST, manifest)
            trim_heap()
        except OSError as exc:
            raise ConfigError(
                f"cannot write the prepared model under {target.parent} ({exc}); free disk space or set "
                f"M3SEARCH_HOME to a writable directory"
            ) from exc
        return PreparedModel(target, manifest)


def _build(resolved: ResolvedModel, work: Path, exporter: Exporter | None = None,
           kind: Kind | None = None, *, torch: bool = False) -> dict[str, Any]:
    spec, src = resolved.spec, resolved.path
    clip = spec.family == "clip"  # two towers: the text graph takes the usual place, the vision graph sits beside it
    if not torch and builder.supports(src, family=spec.family):
        kind = kind or builder.graph_kind(spec)
        try:
            facts = builder.build(kind, src, work, int8_embeddings=spec.int8_embeddings)
        except ModelFormatError as exc:
            raise ModelFormatError(f"the files in {src} are incomplete or corrupt ({exc}): copy them again or run "
                                   f"'m3search models pull {spec.name}'") from exc
        quantization: dict[str, Any] = dict(builder.QUANTIZATION)
        facts.update(fused=True, builder="m3search", kind=kind)
    elif clip:
        from m3search.models.prepare.clip_export import export_towers

        facts, quantization = export_towers(src, work)
    else:
        facts, quantization = _export_with_torch(resolved, work, exporter)
    if clip:
        facts["vision"]["bytes"] = graph_bytes(work / facts["vision"]["file"])
    fp32, int8 = work / "model.fp32.onnx", work / "model.int8.onnx"
    rows = rows_graph(int8)
    shutil.copyfile(src / "tokenizer.json", work / "tokenizer.json")
    return {
        "format": FORMAT,
        "model": spec.name,
        "hf_repo": spec.hf_repo,
        "revision": spec.revision,
        "source": str(src),
        "source_kind": resolved.source,
        "source_sha256": _weights_sha256(src),
        "m3search_version": package_version("m3search"),
        "onnxruntime_version": package_version("onnxruntime"),
        **facts,
        "variants": {
            "onnxruntime/fp32": {"file": fp32.name, "bytes": graph_bytes(fp32), "quantization": None},
            "onnxruntime/int8-dynamic": {
                "file": int8.name,
                "bytes": graph_bytes(int8) + (rows.stat().st_size if rows.is_file() else 0),
                "quantization": {**quantization, "embeddings": spec.int8_embeddings and not clip},
                **({"rows_file": rows.name} if rows.is_file() else {}),  # its batched short-text graph
            },
        },
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _export_with_torch(resolved: ResolvedModel, work: Path,
                       exporter: Exporter | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fallback for architectures the builder does not know: torch export, offline fusion, dynamic INT8."""
    from m3search.models.files import read_config
    from m3search.models.prepare.export import export_onnx

    spec, src = resolved.spec, resolved.path
    raw = work / "raw" / "model.onnx"  # a folder: graphs over 2 GB are exported as many external files
    info = (exporter or export_onnx)(spec, src, raw)
    fp32 = work / "model.fp32.onnx"
    _copy_graph(raw, fp32)
    fused_graph = work / "fused" / "model.onnx"
    fused_graph.parent.mkdir()
    fused = onnx_tools.fuse_graph(raw, fused_graph, info.num_heads, info.hidden_size)
    shutil.rmtree(raw.parent)
    onnx_tools.quantize_int8(fused_graph if fused else fp32, work / "model.int8.onnx",
                             embeddings=spec.int8_embeddings)
    shutil.rmtree(fused_graph.parent)
    facts = {
        "opset": info.opset, "inputs": list(info.inputs), "outputs": list(info.outputs), "fused": fused,
        "num_heads": info.num_heads, "hidden_size": info.hidden_size, "builder": "torch",
        "torch_version": package_version("torch"),
        "pad_token_id": int(read_config(src).get("pad_token_id") or 0),
    }
    return facts, dict(onnx_tools.QUANTIZATION)


def graph_bytes(path: Path) -> int:
    """Size of a graph file with its external data (ONNX ``.data`` or OpenVINO ``.bin``)."""
    extra = [path.with_name(path.name + ".data"), path.with_suffix(".bin")]
    return path.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())


def _copy_graph(src: Path, dst: Path) -> None:
    import onnx

    large = onnx_tools.is_large(src)
    model = onnx.load(str(src))
    onnx.save_model(model, str(dst), save_as_external_data=large, location=dst.name + ".data")


def package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
