"""Self-attention in the forms the engines run fastest, written from one layer's fused QKV weight and bias.

- fp32 (ONNX Runtime's, and OpenVINO's fp32 and bf16): the fused ``Attention`` contrib op (QKV product and
  attention in one).
- ONNX Runtime INT8: the quantized QKV projection (:meth:`GraphWriter.linear`) into ``MultiHeadAttention``; the
  calibration probe also reports the projected Q, K and V's ranges (``<layer>.attention.qkv.out``).
- OpenVINO's INT8 graphs: attention written out (MatMul, Softmax, MatMul), Q, K and V each projected by its own
  product (an 8192-token BGE-M3 document: 55 s instead of 58.5 s with the fused op, int8-dynamic). For int8-static
  with those ranges, fixed QuantizeLinear / DequantizeLinear pairs on the products' input and on Q, K and V
  (symmetric, one calibrated scale each): OpenVINO's CPU plugin then runs attention in its INT8 kernel.
"""

from __future__ import annotations

import numpy as np

from m3search.models.prepare.builder.writer import MS, GraphWriter

FLOAT = 1


def qkv_range_name(prefix: str) -> str:
    return prefix + ".attention.qkv.out"


def self_attention(w: GraphWriter, h: str, weight: np.ndarray, bias: np.ndarray, masks: tuple[str, str],
                   heads: int, prefix: str) -> str:
    """The attention context ``[B, S, H]`` of ``h`` for a torch-layout ``[3H, H]`` QKV weight and ``[3H]`` bias;
    ``masks`` is the attention mask ``[B, S]`` in int64 and in int32."""
    name, mask, mask32 = prefix + ".attention.qkv.weight", masks[0], masks[1]
    if w.int8:
        qkv, qkv_bias = w.linear(h, weight, name), w.weight(prefix + ".qkv.bias", bias)
        if w.probe:
            w.probe_ranges(w.op("Add", [qkv, qkv_bias]), qkv_range_name(prefix), bias.shape[0])
        hidden = bias.shape[0] // 3
        q, k, v = w.op("Split", [qkv, w.const([hidden] * 3)], outputs=3, axis=-1)
        return str(w.op("MultiHeadAttention", [q, k, v, qkv_bias, mask32], domain=MS, num_heads=heads))
    matrix = np.ascontiguousarray(weight.T)
    if w.weights_only:
        return _written_out(w, h, matrix, bias, mask, heads, prefix)
    x, fused = w.projection(h, matrix, name)
    return str(w.op("Attention", [x, fused, w.weight(prefix + ".attention.qkv.bias", bias), mask32], domain=MS,
                    num_heads=heads))


def _written_out(w: GraphWriter, h: str, matrix: np.ndarray, bias: np.ndarray, mask: str, heads: int,
                 prefix: str) -> str:
    """OpenVINO's attention: Q, K and V each by its own product (int8 weights), then MatMul, Softmax, MatMul; with
    calibrated ranges (int8-static) the products' input and Q, K and V are quantized."""
    hidden = matrix.shape[0]
    size, split = hidden // heads, w.const([0, 0, heads, hidden // heads])
    name = prefix + ".attention.qkv.weight"
    ranges = w.static.ranges if w.static is not None and qkv_range_name(prefix) in w.static.ranges.high else None
    if ranges is not None:
        x, weights = w.static_parts(h, matrix, name, 3)
    else:  # weights only: each part's int8 columns dequantized in the graph
        x, weights = h, [w.matrix(f"{name}.{i}", np.ascontiguousarray(matrix[:, i * hidden : (i + 1) * hidden]))
                         for i in range(3)]
    tensors = []
    for i, (part, perm) in enumerate(zip(weights, ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3]), strict=True)):
        part_range = slice(i * hidden, (i + 1) * hidden)
        part_bias = w.weight(f"{prefix}.qkv.bias.{i}", bias[part_range].copy())
        projected = w.op("Add", [w.op("MatMul", [x, part]), part_bias])
        heads_first = str(w.op("Transpose", [w.op("Reshape", [projected, split])], perm=perm))
        if ranges is not None:
            key = qkv_range_name(prefix)
            peak = float(max(np.abs(ranges.low[key][part_range]).max(), np.abs(ranges.high[key][part_range]).max()))
            heads_first = _fake_quantize(w, heads_first, max(peak, 1e-6) / 127.0, np.int8)
        tensors.append(heads_first)
    q, k_t, v = tensors
    scores = w.op("Mul", [w.op("MatMul", [q, k_t]), w.const(1.0 / np.sqrt(size), np.float32)])
    # the probabilities stay in float: in uint8 steps of 1/255 most of a long text's attention rounds to 0
    # (MiniLM held-out cosine to fp32 0.9939 with them quantized, 0.9970 without)
    probs = w.op("Softmax", [w.op("Add", [scores, _mask_bias(w, mask)])], axis=-1)
    context = w.op("Transpose", [w.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    return str(w.op("Reshape", [context, w.const([0, 0, hidden])]))


def _fake_quantize(w: GraphWriter, x: str, scale: float, dtype: type) -> str:
    zero = w.const(0, dtype)
    step = w.const(scale, np.float32)
    return str(w.op("DequantizeLinear", [w.op("QuantizeLinear", [x, step, zero]), step, zero]))


def _mask_bias(w: GraphWriter, mask: str) -> str:
    """``[B, 1, 1, S]``: 0 where the mask is 1, -10000 (as the reference's extended mask) where it is 0."""
    keep = w.op("Cast", [w.op("Unsqueeze", [mask, w.const([1, 2])])], to=FLOAT)
    return str(w.op("Mul", [w.op("Sub", [keep, w.const(1.0, np.float32)]), w.const(10000.0, np.float32)]))
