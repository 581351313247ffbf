"""Writing an ONNX graph node by node, its weights streamed into one external data file as they are made.

Each weight goes to the data file the moment it is added (aligned to 64 KiB, so ONNX Runtime can map it), and
only its location stays in memory: a graph of any size is written holding one tensor at a time.

:meth:`GraphWriter.linear` is where precision is decided. In fp32 it is a MatMul. In int8 the weight is quantized
per output channel (symmetric int8) when written, and the activation at run time, in one of two ways that both
make a text's vector independent of the rest of its batch:

- per text (the default): ONNX Runtime's fused ``DynamicQuantizeMatMul`` (and ``QAttention``, :mod:`.attention`)
  take one scale over the whole input, and the graph is marked (:data:`SCALE_KEY` = ``text``) so that ONNX
  Runtime runs each text by itself, without padding (:class:`m3search.models.runtime.backends.OrtSession`);
- per row (token), for inputs with outlier tokens (``rows=True``: the feed-forward output layer, whose GELU
  output is where one scale per text loses most: MiniLM held-out cosine to fp32 0.9910 with it per text, 0.9964
  per row), symmetric around 128 in uint8: one blocked ``QuantizeLinear`` (opset 21, a block is a whole row), the
  exact integer product (MatMulIntegerToFloat, u8 x s8) and ``int32 * column_scale * row_scale``.

Graphs wider than :data:`NARROW` also get a *rows* graph (``rows=True``, :func:`rows_graph`): every layer per row,
the QKV product into ``MultiHeadAttention``, so that short texts run in padded batches (one text at a time, a wide
graph's short texts lose most: each call streams all the weights for few tokens). It shares the INT8 graph's data
file (``share``): its tensors are the same, by name, and only its nodes are written.

With a :class:`~.quantize.StaticPlan` (int8-static) the activation scales are calibrated constants instead
(:mod:`.quantize`); with ``probe`` the INT8 graph quantizes every layer per row and also outputs each linear
layer's input statistics, for that calibration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from m3search.models.prepare.builder.checkpoint import Checkpoint
from m3search.models.prepare.builder.quantize import (
    PROBE,
    Quantized,
    StaticPlan,
    quantize_columns,
    quantize_layer,
)

ALIGN = 1 << 16
MS = "com.microsoft"
OPSET = 17  # every graph but ONNX Runtime's dynamic INT8 (OpenVINO reads these too)
ROW_OPSET = 21  # ONNX Runtime's dynamic INT8 and its calibration probe: QuantizeLinear with a block_size
FLOAT, INT32, INT64 = 1, 6, 7  # ONNX element types (inputs, Cast targets)
SCALE_KEY = "m3search.activation_scale"  # graph metadata: "text" when ONNX Runtime must run one text per call
WIDTH_KEY = "m3search.width"  # graph metadata of a per-text graph: the input width of its first INT8 product
# Graphs at most this wide run a batch's short texts side by side, each on one thread (the runtime's companion
# session); wider graphs' threads scale on one text, and they get a rows graph for short texts instead.
NARROW = 768
_TYPES = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): 2, np.dtype(np.int8): 3, np.dtype(np.int32): INT32,
          np.dtype(np.int64): INT64}


class GraphWriter:
    """Accumulates nodes, inputs and outputs; weights go straight to ``<graph>.data``.

    Args:
        path: the ``.onnx`` file to write (its data file is ``path`` + ``.data``).
        int8: whether :meth:`linear` quantizes weights and activations (ONNX Runtime's INT8 graph).
        weights_only: int8 weights dequantized in the graph, float activations (OpenVINO's INT8 graph).
        static: calibrated ranges: static INT8 for ONNX Runtime (with ``int8``) or OpenVINO (with ``weights_only``).
        probe: the INT8 graph with each linear layer's input ranges as extra outputs, for calibration.
        rows: the INT8 graph with every layer quantized per row (batched short texts).
        share: another graph of the same checkpoint whose data file this one shares: tensors it has (by name) are
            not written again, new ones are appended to it.
    """

    def __init__(self, path: Path, *, int8: bool, weights_only: bool = False, static: StaticPlan | None = None,
                 probe: bool = False, rows: bool = False, share: Path | None = None) -> None:
        import onnx

        self._onnx = onnx
        self.path = path
        self.int8 = int8 and not weights_only
        self.weights_only = weights_only
        self.static = static
        self.probe = probe
        self.rows = rows and self.int8 and static is None
        self.opset = ROW_OPSET if self.int8 and static is None else OPSET
        self.per_text = self.int8 and static is None and not probe and not rows  # see the module's docstring
        self._shared: dict[str, Any] = {}
        self._generated: set[str] = set()
        if share is not None:
            self._shared = {t.name: t for t in onnx.load(str(share), load_external_data=False).graph.initializer
                            if t.data_location == onnx.TensorProto.EXTERNAL}
        self._data_name = (share or path).name + ".data"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._data = (path.parent / self._data_name).open("ab" if share else "wb")
        self._offset = self._data.tell()
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self._count = 0
        self.width = 0  # the input width of the first INT8 product (the hidden size), for WIDTH_KEY

    # -- names, constants and weights --
    def name(self, stem: str) -> str:
        self._count += 1
        name = f"{stem}_{self._count}"
        self._generated.add(name)  # numbered in this graph's order: never the same tensor as a shared one
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """Write ``array`` to the data file (small ones inline) and return its initializer name."""
        from onnx import numpy_helper

        array = np.asarray(array)  # (not ascontiguousarray: it turns scalars into 1-element vectors)
        if not array.flags.c_contiguous:
            array = array.copy()
        if array.nbytes < 1024:
            self.initializers.append(numpy_helper.from_array(array, name))
            return name
        return self.weight_blocks(name, array.shape, array.dtype, [array])

    def weight_blocks(self, name: str, shape: tuple[int, ...], dtype: Any, blocks: Any) -> str:
        """Write a tensor given as consecutive row blocks (never whole in memory)."""
        if self.has(name, shape):
            for _ in blocks:  # made but not written again (a generator may also gather facts as it goes)
                pass
            self.initializers.append(self._shared[name])
            return name
        pad = -self._offset % ALIGN
        self._data.write(b"\0" * pad)
        start = self._offset = self._offset + pad
        for block in blocks:
            data = np.ascontiguousarray(block, dtype=dtype).tobytes()
            self._data.write(data)
            self._offset += len(data)
        tensor = self._onnx.TensorProto()
        tensor.name, tensor.data_type = name, _TYPES[np.dtype(dtype)]
        tensor.dims.extend(int(d) for d in shape)
        location = (("location", self._data_name), ("offset", str(start)), ("length", str(self._offset - start)))
        for key, value in location:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = self._onnx.TensorProto.EXTERNAL
        self.initializers.append(tensor)
        return name

    def has(self, name: str, shape: tuple[int, ...]) -> bool:
        """Whether tensor ``name`` of this shape is already in the shared data file."""
        return (name in self._shared and name not in self._generated
                and list(self._shared[name].dims) == list(shape))

    def int8_columns(self, name: str, matrix: np.ndarray) -> tuple[str, str]:
        """The int8 weight and column scales of a float ``[in, out]`` matrix (``name.int8``, ``name.scale``),
        quantized only when the shared data file does not have them."""
        self.width = self.width or matrix.shape[0]
        if self.has(name + ".int8", matrix.shape) and self.has(name + ".scale", (matrix.shape[1],)):
            return self.weight_blocks(name + ".int8", matrix.shape, np.int8, []), self.weight_blocks(
                name + ".scale", (matrix.shape[1],), np.float32, [])
        quantized, scales = quantize_columns(matrix)
        return self.weight(name + ".int8", quantized), self.weight(name + ".scale", scales)

    def const(self, array: Any, dtype: Any = np.int64) -> str:
        return self.weight(self.name("const"), np.asarray(array, dtype=dtype))

    # -- nodes --
    def op(self, op_type: str, inputs: list[str], *, outputs: int = 1, domain: str = "", **attrs: Any) -> Any:
        """Add a node; returns its output name (or a list of names when ``outputs`` > 1)."""
        node_name = self.name(op_type)
        names = [f"{node_name}:{i}" for i in range(outputs)]
        node = self._onnx.helper.make_node(op_type, inputs, names, name=node_name, domain=domain, **attrs)
        self.nodes.append(node)
        return names[0] if outputs == 1 else names

    def input(self, name: str, elem: int, shape: list[Any]) -> str:
        self.inputs.append(self._onnx.helper.make_tensor_value_info(name, elem, shape))
        return name

    def reduce(self, op_type: str, x: str, axes: list[int], *, keepdims: bool) -> str:
        """A Reduce* node over ``axes`` in this graph's opset (an attribute before opset 18, an input since)."""
        if self.opset >= 18:
            return str(self.op(op_type, [x, self.const(axes)], keepdims=int(keepdims)))
        return str(self.op(op_type, [x], axes=axes, keepdims=int(keepdims)))

    def probe_ranges(self, x: str, name: str, channels: int) -> None:
        """In the probe graph: the per-channel minimum, maximum and mean square of ``x`` ``[..., channels]`` as the
        outputs ``probe:<name>:min`` / ``:max`` / ``:sq``, for calibration (nothing in other graphs)."""
        if not self.probe:
            return
        flat = self.op("Reshape", [x, self.const([-1, channels])])
        for side, op in (("min", "ReduceMin"), ("max", "ReduceMax"), ("sq", "ReduceMean")):
            source = self.op("Mul", [flat, flat]) if side == "sq" else flat
            self.output(self.reduce(op, source, [0], keepdims=False), f"{PROBE}{name}:{side}", ["channels"])

    def output(self, source: str, name: str, shape: list[Any]) -> None:
        self.nodes.append(self._onnx.helper.make_node("Identity", [source], [name], name=self.name("out")))
        self.outputs.append(self._onnx.helper.make_tensor_value_info(name, 1, shape))

    def matrix(self, name: str, matrix: np.ndarray) -> str:
        """A float ``[in, out]`` weight: stored as is, or (``weights_only``) as int8 columns dequantized in the graph.

        The weights-only form is what OpenVINO's CPU plugin runs as compressed weights (INT8 storage, its own
        dynamic quantization of activations); ONNX Runtime would dequantize the whole matrix on every run.
        """
        if not self.weights_only:
            return self.weight(name, matrix)
        quantized, scales = quantize_columns(matrix)
        return str(self.op("DequantizeLinear", [self.weight(name + ".int8", quantized),
                                                self.weight(name + ".scale", scales)], axis=1))

    def projection(self, x: str, matrix: np.ndarray, name: str) -> tuple[str, str]:
        """The (input, weight) of a float product ``x @ matrix`` (a MatMul, or the fused Attention's QKV): as they
        are, or for OpenVINO's static INT8 the input through a fixed QuantizeLinear / DequantizeLinear pair (its
        FakeQuantize) and the smoothed int8 weight dequantized in the graph."""
        if self.static is None:
            return x, self.matrix(name, matrix)
        x, (weight,) = self.static_parts(x, matrix, name, 1)
        return x, weight

    def static_parts(self, x: str, matrix: np.ndarray, name: str, parts: int) -> tuple[str, list[str]]:
        """OpenVINO's static INT8 of a product whose ``[in, out]`` weight is ``parts`` products side by side (Q, K and
        V): the input once through its fixed QuantizeLinear / DequantizeLinear pair, and each part's int8 columns
        dequantized on their own, so that each part is its own INT8 layer (no split of a joint output)."""
        q = self._static_layer(matrix, name)
        quantized, scale, zero = self._quantized_input(x, q, name)
        width = matrix.shape[1] // parts
        weights = [str(self.op("DequantizeLinear", [
            self.weight(f"{name}.int8.{i}", np.ascontiguousarray(q.weight[:, i * width : (i + 1) * width])),
            self.weight(f"{name}.scale.{i}", q.weight_scale[i * width : (i + 1) * width].copy())], axis=1))
            for i in range(parts)]
        return str(self.op("DequantizeLinear", [quantized, scale, zero])), weights

    def quantized_input(self, x: str, matrix: np.ndarray, name: str) -> tuple[str, str, str, str, str]:
        """ONNX Runtime INT8 of a product's parts for a fused op (``QAttention``): (uint8 input, its scale, its zero
        point, int8 weight, per-column weight scales); the input quantized per text at run time, or (int8-static) by
        its calibrated scale after smoothing."""
        if self.static is None:
            q, scale, zero = self.op("DynamicQuantizeLinear", [x], outputs=3)
            return q, scale, zero, *self.int8_columns(name, matrix)
        layer = self._static_layer(matrix, name)
        q, scale, zero = self._quantized_input(x, layer, name)
        return (q, scale, zero, self.weight(name + ".int8", layer.weight),
                self.weight(name + ".scale", layer.weight_scale))

    def _static_layer(self, matrix: np.ndarray, name: str) -> Quantized:
        if self.static is None:
            raise ValueError("a static layer needs a StaticPlan")
        return quantize_layer(matrix, self.static.ranges, name, self.static.alpha)

    def _quantized_input(self, x: str, q: Quantized, name: str) -> tuple[str, str, str]:
        """``x`` smoothed (unless every channel's factor is 1) and quantized with the layer's constant scale and
        zero point: (uint8 tensor, scale, zero point)."""
        if not np.all(q.inverse_smooth == 1.0):
            x = str(self.op("Mul", [x, self.weight(name + ".smooth", q.inverse_smooth)]))
        scale, zero = self.const(q.scale, np.float32), self.const(q.zero_point, np.uint8)
        return str(self.op("QuantizeLinear", [x, scale, zero])), scale, zero

    # -- the precision-dependent linear layer --
    def linear(self, x: str, weight: np.ndarray, name: str, *, rows: bool = False) -> str:
        """``x @ weight.T`` for a torch-layout ``[out, in]`` weight, without the bias (callers fuse it).

        ``x`` is ``[batch, sequence, in]``; ``rows``: in the dynamic INT8 graph, quantize ``x`` per row rather than
        per text (inputs with outlier tokens).
        """
        matrix = np.ascontiguousarray(weight.T)
        if not self.int8:
            return str(self.op("MatMul", list(self.projection(x, matrix, name))))
        if self.static is not None:
            return self._static_linear(x, matrix, name)
        w, w_scale = self.int8_columns(name, matrix)
        if self.per_text and not rows:
            return str(self.op("DynamicQuantizeMatMul", [x, w, w_scale], domain=MS))
        self.probe_ranges(x, name, matrix.shape[0])
        peak = self.reduce("ReduceMax", self.op("Abs", [x]), [-1], keepdims=True)
        row_scale = self.op("Max", [self.op("Div", [peak, self.const(127.0, np.float32)]),
                                    self.const(1e-12, np.float32)])
        zero = self.op("Expand", [self.const(128, np.uint8), self.op("Shape", [row_scale])])
        q = self.op("QuantizeLinear", [x, row_scale, zero], axis=-1, block_size=matrix.shape[0])
        product = self.op("MatMulIntegerToFloat", [q, w, self.const(1.0, np.float32), w_scale,
                                                    self.const(128, np.uint8)], domain=MS)
        return str(self.op("Mul", [product, row_scale]))

    def _static_linear(self, x: str, matrix: np.ndarray, name: str) -> str:
        """ONNX Runtime's static INT8: ``MatMulIntegerToFloat(QuantizeLinear(x * inverse_smooth), W_int8)`` with
        constant scales (N-D input, no reshape, no per-row reductions)."""
        q, scale, zero, weight, weight_scale = self.quantized_input(x, matrix, name)
        return str(self.op("MatMulIntegerToFloat", [q, weight, scale, weight_scale, zero], domain=MS))

    def save(self, producer: str) -> None:
        """Write the graph file; the data file is complete once this returns."""
        self._data.close()
        onnx = self._onnx
        graph = onnx.helper.make_graph(self.nodes, "m3search", self.inputs, self.outputs, self.initializers)
        model = onnx.helper.make_model(
            graph, producer_name=producer,
            opset_imports=[onnx.helper.make_opsetid("", self.opset), onnx.helper.make_opsetid(MS, 1)])
        model.ir_version = 10 if self.opset >= 21 else 8
        if self.per_text:
            onnx.helper.set_model_props(model, {SCALE_KEY: "text", WIDTH_KEY: str(self.width)})
        elif self.rows:
            onnx.helper.set_model_props(model, {SCALE_KEY: "row"})
        self.path.write_bytes(model.SerializeToString())

    def abort(self) -> None:
        self._data.close()


def rows_graph(path: Path) -> Path:
    """Where the rows graph of the INT8 graph at ``path`` is (``model.int8.onnx`` -> ``model.int8.rows.onnx``)."""
    return path.with_name(path.stem + ".rows.onnx")


@contextmanager
def writing(path: Path, ckpt: Checkpoint, *, int8: bool, weights_only: bool = False, static: StaticPlan | None = None,
            probe: bool = False, rows: bool = False, share: Path | None = None) -> Iterator[GraphWriter]:
    """A :class:`GraphWriter` for ``path`` whose graph is saved when the block ends, or its files abandoned when the
    block raises; the checkpoint is closed either way."""
    writer = GraphWriter(path, int8=int8, weights_only=weights_only, static=static, probe=probe, rows=rows,
                         share=share)
    try:
        yield writer
        writer.save("m3search")
    except BaseException:
        writer.abort()
        raise
    finally:
        ckpt.close()
