"""Self-attention in the forms the engines run fastest, written from one layer's fused QKV weight and bias.

- fp32 (ONNX Runtime's, and OpenVINO's fp32 and bf16): the fused ``Attention`` contrib op (QKV product and
  attention in one).
- ONNX Runtime INT8: ``QAttention`` (QKV product and attention in one), its input quantized per text by
  ``DynamicQuantizeLinear`` (int8-dynamic) or with the calibrated scale (int8-static). MiniLM passages ran 0.96x the
  torch path's graph with it, 0.87x with the QKV product into ``MultiHeadAttention``. The rows graph and the
  calibration probe quantize per row (:meth:`GraphWriter.linear`) into ``MultiHeadAttention``; the probe also
  reports the projected Q, K and V's ranges (``<layer>.attention.qkv.out``).
- OpenVINO's INT8 graphs: attention written out (MatMul, Softmax, MatMul), Q, K and V each projected by its own
  product (an 8192-token BGE-M3 document: 55 s instead of 58.5 s with the fused op, int8-dynamic). For int8-static
  with those ranges, fixed QuantizeLinear / DequantizeLinear pairs on the products' input and on Q, K and V
  (symmetric, one calibrated scale each): OpenVINO's CPU plugin then runs attention in its INT8 kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m3search.models.prepare.builder.writer import FLOAT, INT32, MS, GraphWriter

MASKED = -1e4  # the score (and SPLADE logit) of a padding position, as the references' extended masks


@dataclass(frozen=True)
class AttentionMask:
    """The attention mask in the forms a graph's attention reads, made once per graph: ``index`` the int32 ``[B, S]``
    mask of ONNX Runtime's attention ops, ``bias`` the ``[B, 1, 1, S]`` scores bias of written-out attention (only
    in OpenVINO's INT8 graphs, which write attention out)."""

    index: str
    bias: str | None


def padding_bias(w: GraphWriter, mask: str, masked: float = MASKED) -> str:
    """``[B, S]`` float: 0 where the int mask is 1, ``masked`` where it is 0."""
    keep = w.op("Cast", [mask], to=FLOAT)
    return str(w.op("Mul", [w.op("Sub", [w.const(1.0, np.float32), keep]), w.const(masked, np.float32)]))


def attention_mask(w: GraphWriter, mask: str) -> AttentionMask:
    bias = str(w.op("Unsqueeze", [padding_bias(w, mask), w.const([1, 2])])) if w.weights_only else None
    return AttentionMask(str(w.op("Cast", [mask], to=INT32)), bias)


def heads_first(w: GraphWriter, x: str, heads: int, perm: list[int]) -> str:
    """``[B, S, H]`` as ``[B, heads, S, H / heads]`` (``perm`` [0, 2, 1, 3]) or, for keys, ``[B, heads, H / heads, S]``
    ([0, 2, 3, 1])."""
    return str(w.op("Transpose", [w.op("Reshape", [x, w.const([0, 0, heads, -1])])], perm=perm))


def attend(w: GraphWriter, q: str, k_t: str, v: str, scores_bias: str, size: int, hidden: int) -> str:
    """``softmax(q k_t / sqrt(size) + scores_bias) v`` over heads-first tensors, back to ``[B, S, hidden]``."""
    scores = w.op("Mul", [w.op("MatMul", [q, k_t]), w.const(size ** -0.5, np.float32)])
    probs = w.op("Softmax", [w.op("Add", [scores, scores_bias])], axis=-1)
    context = w.op("Transpose", [w.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    return str(w.op("Reshape", [context, w.const([0, 0, hidden])]))


def qkv_range_name(prefix: str) -> str:
    return prefix + ".attention.qkv.out"


def self_attention(w: GraphWriter, h: str, weight: np.ndarray, bias: np.ndarray, mask: AttentionMask,
                   heads: int, prefix: str) -> str:
    """The attention context ``[B, S, H]`` of ``h`` for a torch-layout ``[3H, H]`` QKV weight and ``[3H]`` bias."""
    name = prefix + ".attention.qkv.weight"
    if w.int8 and not w.probe and not w.rows:
        x, scale, zero, quantized, scales = w.quantized_input(h, np.ascontiguousarray(weight.T), name)
        # a per-text graph runs each text alone, unpadded: no mask (QAttention's masked kernel was 20 % slower)
        index = "" if w.per_text else mask.index
        return str(w.op("QAttention", [x, quantized, w.weight(prefix + ".qkv.bias", bias), scale, scales, index,
                                       zero], domain=MS, num_heads=heads))
    if w.int8:
        qkv, qkv_bias = w.linear(h, weight, name), w.weight(prefix + ".qkv.bias", bias)
        if w.probe:
            w.probe_ranges(w.op("Add", [qkv, qkv_bias]), qkv_range_name(prefix), bias.shape[0])
        hidden = bias.shape[0] // 3
        q, k, v = w.op("Split", [qkv, w.const([hidden] * 3)], outputs=3, axis=-1)
        return str(w.op("MultiHeadAttention", [q, k, v, qkv_bias, mask.index], domain=MS, num_heads=heads))
    matrix = np.ascontiguousarray(weight.T)
    if mask.bias is not None:
        return _written_out(w, h, matrix, bias, mask.bias, heads, prefix)
    x, fused = w.projection(h, matrix, name)
    return str(w.op("Attention", [x, fused, w.weight(prefix + ".attention.qkv.bias", bias), mask.index], domain=MS,
                    num_heads=heads))


def _written_out(w: GraphWriter, h: str, matrix: np.ndarray, bias: np.ndarray, scores_bias: str, heads: int,
                 prefix: str) -> str:
    """OpenVINO's attention: Q, K and V each by its own product (int8 weights), then MatMul, Softmax, MatMul; with
    calibrated ranges (int8-static) the products' input and Q, K and V are quantized."""
    hidden, name, key = matrix.shape[0], prefix + ".attention.qkv.weight", qkv_range_name(prefix)
    parts = [slice(i * hidden, (i + 1) * hidden) for i in range(3)]
    if w.static is not None:
        x, weights = w.static_parts(h, matrix, name, 3)
    else:  # weights only: each part's int8 columns dequantized in the graph
        x, weights = h, [w.matrix(f"{name}.{i}", np.ascontiguousarray(matrix[:, part])) for i, part in enumerate(parts)]
    tensors = []
    for i, (weight, part, perm) in enumerate(zip(weights, parts, ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3]),
                                                 strict=True)):
        projected = w.op("Add", [w.op("MatMul", [x, weight]), w.weight(f"{prefix}.qkv.bias.{i}", bias[part].copy())])
        tensor = heads_first(w, projected, heads, perm)
        if w.static is not None:
            ranges = w.static.ranges
            peak = float(max(np.abs(ranges.low[key][part]).max(), np.abs(ranges.high[key][part]).max()))
            tensor = _fake_quantize(w, tensor, max(peak, 1e-6) / 127.0, np.int8)
        tensors.append(tensor)
    # the probabilities stay in float: in uint8 steps of 1/255 most of a long text's attention rounds to 0
    # (MiniLM held-out cosine to fp32 0.9939 with them quantized, 0.9970 without)
    q, k_t, v = tensors
    return attend(w, q, k_t, v, scores_bias, hidden // heads, hidden)


def _fake_quantize(w: GraphWriter, x: str, scale: float, dtype: type) -> str:
    zero = w.const(0, dtype)
    step = w.const(scale, np.float32)
    return str(w.op("DequantizeLinear", [w.op("QuantizeLinear", [x, step, zero]), step, zero]))
