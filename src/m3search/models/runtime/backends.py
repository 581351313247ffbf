"""Inference engines behind one small session interface: ONNX Runtime and OpenVINO.

Both read the same prepared graphs and are fed the same inputs, so encoders, batching, truncation
reporting and the NaN guard are shared; only :func:`open_session` knows which engine runs.
"""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from m3search._optional import require
from m3search.errors import ConfigError, ModelFormatError
from m3search.memory import drop_file_pages, shedding_file_pages
from m3search.models.prepare.builder.writer import SCALE_KEY
from m3search.models.prepare.onnx import build_session

OPENVINO_EXTRA = "openvino"
# A per-text session (one text per call) runs a batch's texts ``threads`` at a time where that pays:
# - graphs at most COMPANION_WIDTH wide run texts of at most COMPANION_TEXT tokens on a second, single-thread
#   session of the same graph (the "companion", opened on first use; it holds a second copy of the graph's packed
#   weights). One text's small operators leave a narrow graph's threads waiting on each other: two threads ran a
#   text 1.26-1.46x faster than one at MiniLM's width (384; 26-512 tokens), 1.44-1.79x at 768, 1.95x at BGE-M3's
#   1024. Side by side, MiniLM passages ran 1.39-1.45x the torch path's padded batches, against 1.08-1.14x with the
#   companion for texts of at most 128 tokens only;
# - wider graphs run texts of at most SHORT_TEXT tokens side by side on the session itself only when its idle
#   threads do not spin (with spinning, the default, two texts at a time contended for the cores: MiniLM sentences
#   650-670 texts/s against 785-845; BGE-M3's width, 4 layers, passages 15 against 16-21); otherwise, and for longer
#   texts, one after the other.
COMPANION_WIDTH = 768
COMPANION_TEXT = 512
SHORT_TEXT = 128


class Session(Protocol):
    """What an encoder needs from an inference engine."""

    input_names: list[str]

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]: ...


class OrtSession:
    """An ONNX Runtime CPU session (thread-safe: ``run`` may be called concurrently).

    A graph marked ``m3search.activation_scale = text`` (the builder's dynamic INT8: one activation scale per input,
    :mod:`m3search.models.prepare.builder.writer`) runs each text of a batch by itself, cut to its own length: the
    scales then depend on that text alone, so its vector is the same whatever else is in the batch (and no padding
    is computed). Where it pays, texts run ``threads`` at a time (:data:`COMPANION_WIDTH`). Outputs along the
    sequence are padded back with zeros to the batch's width.
    """

    def __init__(self, path: Path, threads: int, *, spinning: bool) -> None:
        self._session = build_session(path, threads, spinning=spinning)
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.per_text = self._session.get_modelmeta().custom_metadata_map.get(SCALE_KEY) == "text"
        outputs = self._session.get_outputs()
        self._output_names = [o.name for o in outputs]
        self._sequence_axes = {o.name: [axis for axis, dim in enumerate(o.shape)
                                        if isinstance(dim, str) and dim.startswith("sequence")] for o in outputs}
        self._threads, self._path, self._spinning = threads, path, spinning
        # the companion: a single-thread session of a narrow graph, opened on first use
        self._companion = self.per_text and threads > 1 and 0 < _width(path) <= COMPANION_WIDTH
        self._single: Any = None
        self._single_lock = threading.Lock()
        concurrent = self.per_text and threads > 1 and (self._companion or not spinning)
        self._texts = ThreadPoolExecutor(threads, "m3search-text") if concurrent else None

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]:
        if not self.per_text:
            result: list[Any] = self._session.run(output_names, feed)
            return result
        names = output_names if output_names is not None else self._output_names
        mask = feed["attention_mask"]
        lengths = _prefix_lengths(mask)
        rows: list[list[np.ndarray]] = [[] for _ in lengths]

        def run_rows(session: Any, group: range) -> None:  # a share of the texts, one at a time
            for row in group:
                length = lengths[row]
                rows[row] = session.run(names, {k: (v[row : row + 1, :length] if v.shape[:2] == mask.shape
                                                    else v[row : row + 1]) for k, v in feed.items()})

        workers = min(len(lengths), self._threads)
        limit = COMPANION_TEXT if self._companion else SHORT_TEXT
        if workers < 2 or self._texts is None or max(lengths) > limit:
            run_rows(self._session, range(len(lengths)))
        else:  # texts are sorted longest first: interleaved shares are about equal
            session = self._single_session() if self._companion else self._session
            list(self._texts.map(partial(run_rows, session), [range(i, len(lengths), workers) for i in range(workers)]))
        return [self._gather([r[i] for r in rows], name, mask.shape[1], lengths) for i, name in enumerate(names)]

    def _single_session(self) -> Any:
        """The companion session (one thread; its runs execute on the calling thread), opened on first use."""
        with self._single_lock:
            if self._single is None:
                self._single = build_session(self._path, 1, spinning=self._spinning)
            return self._single

    def _gather(self, parts: list[np.ndarray], name: str, width: int, lengths: list[int]) -> np.ndarray:
        """One output of the batch from each text's own: along the sequence, zeros after each text's length."""
        axes = self._sequence_axes[name]
        if not axes or all(length == width for length in lengths):
            return np.concatenate(parts)
        shape = list(parts[0].shape)
        for axis in axes:
            shape[axis] += width - lengths[0]
        out = np.zeros((len(parts), *shape[1:]), dtype=parts[0].dtype)
        for row, part in enumerate(parts):
            index: tuple[int | slice, ...] = (row, *(slice(0, n) for n in part.shape[1:]))
            out[index] = part[0]
        return out


def _width(path: Path) -> int:
    """The input width of a graph's first INT8 product (its hidden size), read from the graph file alone (its
    weights stay on disk); 0 if it has none."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {tensor.name: tensor.dims for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QAttention", "DynamicQuantizeMatMul") and node.input[1] in dims:
            return int(dims[node.input[1]][0])
    return 0


def _prefix_lengths(mask: np.ndarray) -> list[int]:
    """Each row's length: its mask must be ones, then zeros (right padding, as every encoder pads)."""
    lengths = [int(n) for n in mask.sum(axis=1)]
    for row, length in enumerate(lengths):
        if not mask[row, :length].all():
            raise ConfigError("a batch for a per-text INT8 graph must be padded on the right")
    return lengths


class OpenVinoSession:
    """An OpenVINO CPU compiled model; each calling thread gets its own infer request.

    OpenVINO maps the weights file (or the compiled-model cache) and copies what it runs into its own buffers, while
    compiling and on the first inference; the mapped pages are then dropped from memory (see
    :func:`m3search.memory.drop_file_pages`): BGE-M3 fp32 held 3.5 GB after its first inference, 1.4 GB now.
    """

    def __init__(self, path: Path, threads: int, precision: str, cache_dir: Path | None) -> None:
        ov = require("openvino", OPENVINO_EXTRA, "the OpenVINO backend")
        core = ov.Core()
        if cache_dir is not None:
            core.set_property({"CACHE_DIR": str(cache_dir)})  # compiled kernels reused across processes
        config = {
            "INFERENCE_NUM_THREADS": max(1, threads),
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        weights = [path.with_name(path.name + ".data"), path.with_suffix(".bin"), *([cache_dir] if cache_dir else [])]
        self._mapped: list[Path] | None = weights  # dropped again after the first inference
        try:
            with shedding_file_pages(weights):
                self._compiled = core.compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable files
            raise ModelFormatError(
                f"OpenVINO cannot load {path}: {exc}; delete it and run 'm3search models prepare --force'"
            ) from exc
        self.input_names = [i.get_any_name() for i in self._compiled.inputs]
        self._output_index = {name: i for i, o in enumerate(self._compiled.outputs) for name in o.get_names()}
        self._local = threading.local()

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer(feed)
        mapped, self._mapped = self._mapped, None
        if mapped:
            drop_file_pages(mapped)
        if output_names is None:
            indices = list(range(len(self._compiled.outputs)))
        else:
            indices = [self._output_index[name] for name in output_names]
        # copy: the request's output tensors are reused by its next inference
        return [np.array(request.get_output_tensor(i).data) for i in indices]


def openvino_available() -> bool:
    """Whether the optional OpenVINO backend is installed."""
    return importlib.util.find_spec("openvino") is not None


def available_backends() -> list[str]:
    """The installed backends, ONNX Runtime first."""
    return ["onnxruntime", *(["openvino"] if openvino_available() else [])]


@cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as OpenVINO reports it."""
    if not openvino_available():
        return False
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def check_mode(backend: str, precision: str) -> None:
    """Refuse combinations this machine or engine cannot run well.

    Raises:
        ConfigError: bf16 asked of ONNX Runtime, or of a CPU without native bf16 (it would be emulated, slowly).
        MissingDependencyError: the OpenVINO backend is not installed.
    """
    if backend not in ("onnxruntime", "openvino"):
        raise ConfigError(f"backend must be 'auto', 'onnxruntime' or 'openvino', not {backend!r}")
    if backend == "openvino":
        require("openvino", OPENVINO_EXTRA, "the OpenVINO backend")
    if precision == "bf16":
        if backend != "openvino":
            raise ConfigError("bf16 runs on the openvino backend (ONNX Runtime has no fast bf16 CPU kernels)")
        if not cpu_supports_bf16():
            raise ConfigError("this CPU has no native bf16 (AVX512-BF16 or AMX); use int8-static or fp32")


def open_session(backend: str, path: Path, precision: str, threads: int, *, spinning: bool = True,
                 cache_dir: Path | None = None) -> Session:
    """A session of ``backend`` over the graph at ``path``."""
    if backend == "openvino":
        return OpenVinoSession(path, threads, precision, cache_dir)
    return OrtSession(path, threads, spinning=spinning)
