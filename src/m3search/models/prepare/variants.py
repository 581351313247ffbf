"""Precision modes per backend, built on first use beside the prepared model and recorded in its manifest.

| backend | fp32 | bf16 | int8-dynamic | int8-static |
| --- | --- | --- | --- | --- |
| onnxruntime | the builder's fused graph | refused | builder INT8, per-token scales | builder INT8, calibrated scales |
| openvino | the same fused graph | same graph, bf16 execution | builder INT8 weights | builder INT8, calibrated QDQ |

The builder's int8-static (:mod:`.static`) is calibrated on the INT8 graph and written from the checkpoint, so no
fp32 model is loaded. (A torch-exported model, the fallback: a plain export fused at load, fused + dynamic INT8 for
onnxruntime, ``quantize_static`` (QDQ, MinMax) for its int8-static, and an IR of the fused graph, NNCF's weight
compression and NNCF's static INT8 for OpenVINO.)

OpenVINO runs onnxruntime's fused graph (its contrib Attention and SkipLayerNormalization ops) about 1.3x faster
than the plain export. The builder's graph is written fused, and OpenVINO compiles that ONNX file directly (no IR
copy, no conversion: its reader maps the external weights, so one copy is in memory). A torch-exported graph is
fused by onnxruntime's optimizer and converted to an IR once; NNCF cannot read that graph, so its int8-static
quantizes the plain export, and its int8-dynamic is NNCF's weight compression.

int8-static is calibrated on the texts of :mod:`.calibration`; the manifest records which texts (a digest),
and a different calibration set rebuilds the variant (and measures the ranges again).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from m3search._optional import require
from m3search.errors import ConfigError
from m3search.models.prepare import onnx as onnx_tools
from m3search.models.prepare import static
from m3search.models.prepare.cache import PreparedModel, graph_bytes, lock_for, package_version
from m3search.models.runtime.backends import OPENVINO_EXTRA, check_mode

log = logging.getLogger(__name__)

Feeds = list[dict[str, np.ndarray]]
FILES = {
    "onnxruntime/int8-static": "model.int8-static.onnx",
    "openvino/fp32": "openvino/model.fp32.xml",
    "openvino/bf16": "openvino/model.fp32.xml",
    "openvino/int8-dynamic": "openvino/model.int8-dynamic.xml",
    "openvino/int8-static": "openvino/model.int8-static.xml",
}


def _nncf_logs_to_stderr() -> None:
    for handler in logging.getLogger("nncf").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.__stdout__):
            handler.setStream(sys.stderr)


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Tool chatter (NNCF's log lines and progress bars) goes to stderr: stdout is the commands' output."""
    _nncf_logs_to_stderr()  # NNCF binds its log handler to the stdout of the moment it is imported
    with contextlib.redirect_stdout(sys.stderr):
        try:
            yield
        finally:
            _nncf_logs_to_stderr()


def calibration_digest(texts: list[str]) -> str:
    """A short digest naming a calibration set."""
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def ensure_variant(
    prepared: PreparedModel,
    backend: str,
    precision: str,
    calibration: Callable[[], list[str]],
    to_feeds: Callable[[list[str]], Feeds],
) -> Path:
    """The graph file of ``backend``/``precision``, building it first if needed.

    ``calibration`` returns the calibration texts (read only for int8-static, to compare their digest with the
    built variant's); ``to_feeds`` turns them into model inputs, only when the variant is (re)built.
    """
    check_mode(backend, precision)
    key = f"{backend}/{precision}"
    with lock_for(prepared.directory / key):
        entry = prepared.variant(backend, precision)
        texts = calibration() if precision == "int8-static" else []
        digest = calibration_digest(texts) if texts else None
        if entry is not None and (digest is None or entry.get("calibration") == digest):
            return prepared.path(backend, precision)
        feeds = to_feeds(texts) if texts else []
        if key not in FILES:
            raise ConfigError(f"no recipe builds {key}")
        target = prepared.directory / variant_file(prepared, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with quiet_stdout():
            if precision == "int8-static" and _built_here(prepared):
                quantization = _build_static(prepared, backend, target, feeds, digest or "")
            elif backend == "openvino":
                quantization = _build_openvino(prepared, precision, target, feeds)
            else:
                quantization = _build_ort_static(prepared.onnx_path("fp32"), target, feeds)
        record: dict[str, Any] = {"file": str(target.relative_to(prepared.directory)), "bytes": graph_bytes(target),
                                  "quantization": quantization}
        if digest is not None:
            record["calibration"] = digest
        record["fidelity"] = None  # a rebuilt variant is checked again
        prepared.record(backend, precision, record)
        return target


def _build_openvino(prepared: PreparedModel, precision: str, target: Path, feeds: Feeds) -> dict[str, Any]:
    ov = require("openvino", OPENVINO_EXTRA, "the OpenVINO backend")
    built = _built_here(prepared)
    if precision == "int8-dynamic" and built:  # from the checkpoint: no fp32 model in memory, no fp32 IR on disk
        _save_ir(ov, _weights_only_model(ov, prepared), target)
        return {"method": "m3search builder", "weights": "int8 symmetric per-channel, dequantized in the graph",
                "activations": "quantized at run time by the CPU plugin where it can",
                "openvino_version": package_version("openvino")}
    ir = prepared.directory / variant_file(prepared, "openvino/fp32")  # the builder's fused ONNX graph, or an IR
    if not ir.is_file():
        _save_ir(ov, _fused_model(ov, prepared), ir)
    if precision in ("fp32", "bf16"):
        return {"method": None, "execution": precision, "openvino_version": package_version("openvino")}
    nncf = require("nncf", OPENVINO_EXTRA, "OpenVINO INT8 quantization")
    if precision == "int8-dynamic":
        model = nncf.compress_weights(ov.Core().read_model(str(ir)), mode=nncf.CompressWeightsMode.INT8_ASYM)
        method: dict[str, Any] = {"method": "nncf.compress_weights", "weights": "int8 asymmetric per-channel",
                  "activations": "quantized at run time by the CPU plugin where it can"}
    else:
        # only models the builder cannot rewrite get here (builder-made ones: _build_static); NNCF reads their plain
        # export (it cannot read onnxruntime's optimizer output)
        plain = ov.convert_model(str(prepared.onnx_path("fp32")))
        model = nncf.quantize(
            plain, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.MIXED, subset_size=len(feeds),
        )
        method = {"method": "nncf.quantize", "preset": "mixed", "model_type": "transformer",
                  "calibration_batches": len(feeds)}
    _save_ir(ov, model, target)
    return {**method, "nncf_version": package_version("nncf"), "openvino_version": package_version("openvino")}


def _build_static(prepared: PreparedModel, backend: str, target: Path, feeds: Feeds, digest: str) -> dict[str, Any]:
    """int8-static of a builder-made model: calibrated on its INT8 graph, written from the checkpoint (no fp32
    model in memory, :mod:`.static`)."""
    ranges = static.calibrated_ranges(prepared, feeds, digest)
    facts = {"calibration_batches": len(feeds)}
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
        if backend == "openvino":
            ov = require("openvino", OPENVINO_EXTRA, "the OpenVINO backend")
            graph = Path(tmp) / "model.onnx"
            facts.update(static.write_static_graph(prepared, backend, graph, ranges))
            _save_ir(ov, ov.Core().read_model(str(graph)), target)
            return facts
        facts.update(static.write_static_graph(prepared, backend, Path(tmp) / target.name, ranges))
        for path in Path(tmp).iterdir():
            shutil.move(path, target.parent / path.name)
    return facts


def variant_file(prepared: PreparedModel, key: str) -> str:
    """Where a variant's graph goes. OpenVINO compiles the builder's fused fp32 ONNX graph directly (its ONNX reader
    maps the external weights): no IR copy, no conversion holding a second copy of the weights in memory."""
    if key in ("openvino/fp32", "openvino/bf16") and prepared.manifest.get("builder") == "m3search":
        return str(prepared.manifest["variants"]["onnxruntime/fp32"]["file"])
    return FILES[key]


def _built_here(prepared: PreparedModel) -> bool:
    """Whether the graphs were written by m3search's builder (and its checkpoint is still there to read)."""
    return prepared.manifest.get("builder") == "m3search" and Path(prepared.manifest["source"]).is_dir()


def _weights_only_model(ov: Any, prepared: PreparedModel) -> Any:
    """OpenVINO's INT8 model, written from the checkpoint with int8 weights (never a float copy in memory)."""
    from m3search.models.prepare.builder.heads import write_graph

    with tempfile.TemporaryDirectory(dir=prepared.directory, prefix=".tmp-") as tmp:
        graph = Path(tmp) / "model.onnx"
        args = static.builder_args(prepared)
        write_graph(args["kind"], args["src"], graph, int8=True, weights_only=True,
                    int8_embeddings=args["int8_embeddings"])
        return ov.Core().read_model(str(graph))  # weights read into memory here, before tmp is removed


def _fused_model(ov: Any, prepared: PreparedModel) -> Any:
    """The fp32 graph with onnxruntime's transformer fusions, as an OpenVINO model (plain if fusion fails)."""
    plain = prepared.onnx_path("fp32")
    if prepared.manifest.get("builder") == "m3search":  # written fused already
        return ov.Core().read_model(str(plain))
    heads, hidden = int(prepared.manifest.get("num_heads", 0)), int(prepared.manifest.get("hidden_size", 0))
    with tempfile.TemporaryDirectory(dir=prepared.directory, prefix=".tmp-") as tmp:
        fused = Path(tmp) / "model.onnx"
        if heads and hidden and onnx_tools.fuse_graph(plain, fused, heads, hidden):
            return ov.convert_model(str(fused))  # weights are read into memory here, before tmp is removed
    return ov.convert_model(str(plain))


def _save_ir(ov: Any, model: Any, target: Path) -> None:
    """Write an IR atomically (both files appear, or neither)."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
        xml = Path(tmp) / target.name
        ov.save_model(model, str(xml), compress_to_fp16=False)
        shutil.move(xml.with_suffix(".bin"), target.with_suffix(".bin"))
        shutil.move(xml, target)


class _Reader:
    """ONNX Runtime's calibration-data-reader protocol over prepared feeds."""

    def __init__(self, feeds: Feeds) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _build_ort_static(fp32: Path, target: Path, feeds: Feeds) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (_Reader, CalibrationDataReader), {})(feeds)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".tmp-") as tmp:
        out = Path(tmp) / target.name
        quantize_static(
            str(fp32), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
            use_external_data_format=onnx_tools.is_large(fp32),
            extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False},
        )
        for path in Path(tmp).iterdir():
            shutil.move(path, target.parent / path.name)
    return {"method": "onnxruntime.quantize_static", "format": "QDQ", "per_channel": True, "weights": "int8",
            "activations": "uint8", "ops": ["MatMul"], "calibration_batches": len(feeds)}
