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
from m3search.models.prepare.builder.writer import NARROW, SCALE_KEY, WIDTH_KEY, rows_graph
from m3search.models.prepare.onnx import build_session
from m3search.models.runtime.batching import plan_batches
from m3search.settings import DEFAULT_BATCH_TOKENS

OPENVINO_EXTRA = "openvino"
# A per-text session (one text per call) loses to padded batches on short texts; where it pays, it runs them
# otherwise:
# - graphs at most NARROW wide (writer.py) run texts of at most COMPANION_TEXT tokens side by side on a second,
#   single-thread session of the same graph (the "companion", opened on first use; it holds a second copy of the
#   graph's packed weights). One text's small operators leave a narrow graph's threads waiting on each other: two
#   threads ran a text 1.26-1.46x faster than one at MiniLM's width (384; 26-512 tokens), 1.44-1.79x at 768, but
#   1.95x at BGE-M3's 1024. Side by side, MiniLM passages ran 1.39-1.45x the torch path's padded batches, against
#   1.08-1.14x with the companion for texts of at most 128 tokens only;
# - wider graphs run texts of at most SHORT_TEXT tokens on their rows graph (the same weights quantized per row,
#   writer.py), in padded batches of DEFAULT_BATCH_TOKENS: one text per call, each call streamed all the weights
#   for a few tokens;
# - other texts run one after the other (two at a time on one session contended for the cores, with spinning
#   threads: MiniLM sentences 650-670 texts/s against 785-845).
COMPANION_TEXT = 512
SHORT_TEXT = 128
ROWS_BATCH = 64  # texts per call of a rows graph, at most


class Session(Protocol):
    """What an encoder needs from an inference engine."""

    input_names: list[str]

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]: ...


class OrtSession:
    """An ONNX Runtime CPU session (thread-safe: ``run`` may be called concurrently).

    A graph marked ``m3search.activation_scale = text`` (the builder's dynamic INT8: one activation scale per input,
    :mod:`m3search.models.prepare.builder.writer`) runs each text of a batch by itself, cut to its own length: the
    scales then depend on that text alone, so its vector is the same whatever else is in the batch (and no padding
    is computed). Where it pays, short texts run side by side or in batches of the rows graph (see
    :data:`SHORT_TEXT`). Outputs along the sequence are padded back with zeros to the batch's width.
    """

    def __init__(self, path: Path, threads: int, *, spinning: bool) -> None:
        self._threads, self._path, self._spinning = threads, path, spinning
        self._lock = threading.Lock()
        rows = rows_graph(path)
        self._rows_path = rows if rows.is_file() else None  # the builder writes one only beside a per-text graph
        self._session: Any = None  # the graph's own session, the companion, the rows graph's: opened on first use
        self._single: Any = None
        self._rows: Any = None
        first = self._opened("_rows", rows, threads) if self._rows_path else self._opened("_session", path, threads)
        facts = first.get_modelmeta().custom_metadata_map
        self.per_text = self._rows_path is not None or facts.get(SCALE_KEY) == "text"
        width = int(facts.get(WIDTH_KEY, 0))  # 0 in a rows graph (a wide model's) or a graph written before the key
        self.input_names = [i.name for i in first.get_inputs()]
        outputs = first.get_outputs()
        self._output_names = [o.name for o in outputs]
        self._sequence_axes = {o.name: [axis for axis, dim in enumerate(o.shape)
                                        if isinstance(dim, str) and dim.startswith("sequence")] for o in outputs}
        # the companion: a single-thread session of a narrow graph
        self._companion = self.per_text and threads > 1 and 0 < width <= NARROW
        self._texts = ThreadPoolExecutor(threads, "m3search-text") if self._companion else None

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[Any]:
        if not self.per_text:
            result: list[Any] = self._session.run(output_names, feed)
            return result
        names = output_names if output_names is not None else self._output_names
        mask = feed["attention_mask"]
        lengths = _prefix_lengths(mask)
        parts: list[list[np.ndarray]] = [[] for _ in lengths]
        alone = list(range(len(lengths)))
        if self._rows_path is not None:
            self._run_rows_graph([i for i in alone if lengths[i] <= SHORT_TEXT], names, feed, lengths, parts)
            alone = [i for i in alone if lengths[i] > SHORT_TEXT]
        self._run_alone(alone, names, feed, lengths, parts)
        return [self._gather([p[i] for p in parts], name, mask.shape[1], lengths) for i, name in enumerate(names)]

    def _run_alone(self, indices: list[int], names: list[str], feed: dict[str, np.ndarray], lengths: list[int],
                   parts: list[list[np.ndarray]]) -> None:
        """Each text by itself, cut to its own length: side by side on the companion where it pays."""
        def run_share(session: Any, share: list[int]) -> None:
            for row in share:
                parts[row] = session.run(names, _take(feed, [row], lengths[row]))

        if not indices:
            return
        workers = min(len(indices), self._threads)
        if workers < 2 or self._texts is None or max(lengths[i] for i in indices) > COMPANION_TEXT:
            run_share(self._opened("_session", self._path, self._threads), indices)
        else:  # texts are sorted longest first: interleaved shares are about equal
            single = self._opened("_single", self._path, 1)
            list(self._texts.map(partial(run_share, single), [indices[i::workers] for i in range(workers)]))

    def _run_rows_graph(self, indices: list[int], names: list[str], feed: dict[str, np.ndarray],
                        lengths: list[int], parts: list[list[np.ndarray]]) -> None:
        """Short texts in padded batches of the rows graph (quantized per row: a text's vector does not depend on
        its batch), each text's outputs cut to its own length."""
        if not indices:
            return
        assert self._rows_path is not None
        session = self._opened("_rows", self._rows_path, self._threads)
        for batch in plan_batches([lengths[i] for i in indices], DEFAULT_BATCH_TOKENS, ROWS_BATCH):
            members = [indices[j] for j in batch]
            width = max(lengths[i] for i in members)
            outputs = session.run(names, _take(feed, members, width))
            for row, index in enumerate(members):
                parts[index] = [self._cut(out[row : row + 1], name, width - lengths[index])
                                for out, name in zip(outputs, names, strict=True)]

    def _cut(self, part: np.ndarray, name: str, excess: int) -> np.ndarray:
        """``part`` without its last ``excess`` positions along the sequence."""
        index = [slice(None)] * part.ndim
        for axis in self._sequence_axes[name]:
            index[axis] = slice(0, part.shape[axis] - excess)
        return part[tuple(index)]

    def _opened(self, attribute: str, path: Path, threads: int) -> Any:
        """The session in ``attribute`` (the graph's own, the companion or the rows graph's), opened on first use."""
        with self._lock:
            if getattr(self, attribute) is None:
                setattr(self, attribute, build_session(path, threads, spinning=self._spinning))
            return getattr(self, attribute)

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


def _take(feed: dict[str, np.ndarray], rows: list[int], width: int) -> dict[str, np.ndarray]:
    """The feed of some of a batch's texts, cut to ``width`` along the sequence (inputs shaped like the mask)."""
    shape = feed["attention_mask"].shape
    return {k: (v[rows, :width] if v.shape[:2] == shape else v[rows]) for k, v in feed.items()}


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
