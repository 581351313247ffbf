"""int8-static of builder-made models, in bounded memory: calibrated on the INT8 graph, written from the checkpoint.

The activation ranges come from a probe graph (the INT8 graph plus each linear layer's input minima and maxima
as outputs, :mod:`.builder.quantize`) run over the calibration feeds in one ONNX Runtime session, so no fp32
model is ever in memory. They are kept beside the prepared model (``calibration-ranges.npz``, named by the
calibration set's digest) and shared by ONNX Runtime's and OpenVINO's static graphs. Peak memory is one INT8
session; the written graph is INT8 too.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from m3search.memory import trim_heap
from m3search.models.prepare.builder.heads import write_graph
from m3search.models.prepare.builder.quantize import PROBE, Ranges, StaticPlan
from m3search.models.prepare.cache import PreparedModel, package_version
from m3search.models.prepare.onnx import UNFUSED

log = logging.getLogger(__name__)
RANGES_FILE = "calibration-ranges.npz"
PROBE_FORM = "2"  # what the probe reports (2: linear inputs and attention's Q, K, V); older ranges are re-measured
CALIBRATION_TOKENS = 2048  # tokens per calibration run: the activations of longer batches made the peak
Feeds = list[dict[str, np.ndarray]]


def builder_args(prepared: PreparedModel) -> dict[str, Any]:
    """What :func:`write_graph` needs besides the form: the graph kind, the checkpoint and the embedding table's
    precision, as the manifest recorded them."""
    int8 = prepared.manifest["variants"]["onnxruntime/int8-dynamic"]["quantization"]
    return {"kind": prepared.manifest.get("kind", "hidden"), "src": Path(prepared.manifest["source"]),
            "int8_embeddings": bool(int8.get("embeddings"))}


def calibrated_ranges(prepared: PreparedModel, feeds: Feeds, digest: str) -> Ranges:
    """The activation ranges for the calibration set named ``digest`` (measured now, or kept from before)."""
    path, key = prepared.directory / RANGES_FILE, f"{digest}/probe{PROBE_FORM}"
    try:
        with np.load(path) as kept:
            if str(kept["digest"]) == key:
                return Ranges.from_arrays({k: kept[k] for k in kept.files if k != "digest"})
    except (OSError, ValueError, KeyError, EOFError):  # missing or unreadable (e.g. a disk filled up): measure again
        pass
    ranges = _measure(prepared, feeds)
    with tempfile.NamedTemporaryFile(dir=prepared.directory, suffix=".npz", delete=False) as out:
        arrays: dict[str, Any] = {"digest": np.array(key), **ranges.to_arrays()}
        np.savez(out, **arrays)
    Path(out.name).replace(path)
    return ranges


def _measure(prepared: PreparedModel, feeds: Feeds) -> Ranges:
    import onnxruntime as ort

    args = builder_args(prepared)
    ranges = Ranges()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=prepared.directory, prefix=".tmp-") as tmp:
        graph = Path(tmp) / "probe.onnx"
        write_graph(args["kind"], args["src"], graph, int8=True, probe=True, int8_embeddings=args["int8_embeddings"])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # no arena: batches grow longer (length-sorted) and an arena keeps every size it ever held (BGE-M3: the
        # process grew from 1.8 to 2.96 GB over the calibration); plain allocations go back after each batch
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=UNFUSED)
        names = [o.name for o in session.get_outputs() if o.name.startswith(PROBE)]
        for feed in feeds:
            for part in split_feed(feed, CALIBRATION_TOKENS):
                ranges.update(dict(zip(names, session.run(names, part), strict=True)))
        del session
    trim_heap()  # the session's arena goes back to the system before the fidelity reference runs
    log.info("calibrated %d layers on %d batches in %.1f s", len(ranges.layers()), len(feeds),
             time.perf_counter() - started)
    return ranges


def split_feed(feed: dict[str, np.ndarray], tokens: int) -> list[dict[str, np.ndarray]]:
    """A batch of model inputs (``[batch, sequence]`` arrays) cut into batches of at most ``tokens`` tokens."""
    rows, length = next(iter(feed.values())).shape
    step = max(1, tokens // max(length, 1))
    return [{name: value[i : i + step] for name, value in feed.items()} for i in range(0, rows, step)]


def write_static_graph(prepared: PreparedModel, backend: str, out: Path, ranges: Ranges) -> dict[str, Any]:
    """Write ``backend``'s int8-static graph (ONNX, + ``.data``) to ``out``; returns its manifest description."""
    args = builder_args(prepared)
    write_graph(args["kind"], args["src"], out, int8=backend == "onnxruntime", weights_only=backend == "openvino",
                static=StaticPlan(ranges, backend), int8_embeddings=args["int8_embeddings"])
    form = ("QuantizeLinear + MatMulIntegerToFloat" if backend == "onnxruntime"
            else "QuantizeLinear/DequantizeLinear pairs (OpenVINO's FakeQuantize)")
    return {"method": "m3search builder, static", "weights": "int8 symmetric per output channel",
            "activations": "uint8, one calibrated scale and zero point per layer input", "form": form,
            "smoothing": "SmoothQuant, strength chosen per layer", "calibrated_layers": len(ranges.layers()),
            **({"openvino_version": package_version("openvino")} if backend == "openvino" else {})}
