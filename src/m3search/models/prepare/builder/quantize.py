"""INT8 arithmetic of the builder: weights per output column, embedding rows, and static INT8 from calibrated ranges.

Static INT8 is written at build time instead of by a quantizer over an fp32 model (NNCF or onnxruntime's
``quantize_static`` held the whole fp32 model and its activations: 9.7 GB for BGE-M3). It takes one INT8 session
and two passes of the builder, one tensor in memory at a time:

1. a *probe* graph, the INT8 graph with two extra outputs per linear layer, the per-channel minimum and maximum
   of its input over the batch (``GraphWriter(probe=True)``);
2. the calibration texts run through it, the ranges kept as running minima and maxima (:class:`Ranges`);
3. the static graph, each linear layer with fixed activation scales (``GraphWriter(static=StaticPlan(...))``).

Outlier channels (a few input channels far larger than the rest, as transformers' layer-norm outputs have) are
smoothed as SmoothQuant does: input channel ``c`` is divided by ``s_c = max|x_c|^a / max|W_c|^(1-a)`` before the
per-tensor quantization and the weight's row ``c`` multiplied by it, so the product is unchanged while the
activation range is flatter. Every scale is a constant, so a text's vectors do not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


def quantize_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column of a ``[in, out]`` matrix: (int8 weights, float32 scales)."""
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-12).astype(np.float32) / 127.0
    quantized = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return quantized, scale.astype(np.float32)


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row of an embedding table: (int8 rows, float32 scales)."""
    scale = np.maximum(np.abs(table).max(axis=1), 1e-12).astype(np.float32) / 127.0
    quantized = np.clip(np.rint(table / scale[:, None]), -127, 127).astype(np.int8)
    return quantized, scale


PROBE = "probe:"  # output names of the probe graph: probe:<layer>:min / :max / :sq (mean square per channel)
ALPHAS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # SmoothQuant migration strengths tried per layer


@dataclass
class Ranges:
    """Per-input-channel statistics of each linear layer's input over the calibration batches: minimum, maximum
    and mean square (the mean of the batches' means)."""

    low: dict[str, np.ndarray] = field(default_factory=dict)
    high: dict[str, np.ndarray] = field(default_factory=dict)
    square: dict[str, np.ndarray] = field(default_factory=dict)
    batches: dict[str, int] = field(default_factory=dict)

    def update(self, outputs: Mapping[str, np.ndarray]) -> None:
        """Fold one batch's probe outputs in."""
        for key, value in outputs.items():
            _, layer, side = key.rsplit(":", 2)
            if side == "sq":
                count = self.batches.get(layer, 0) + 1
                mean = self.square.get(layer, np.zeros_like(value))
                self.square[layer], self.batches[layer] = mean + (value - mean) / count, count
                continue
            store = self.low if side == "min" else self.high
            old = store.get(layer)
            store[layer] = value if old is None else (np.minimum if side == "min" else np.maximum)(old, value)

    def layers(self) -> list[str]:
        return sorted(self.low)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """A flat mapping for ``np.savez`` (kept beside the prepared model)."""
        arrays: dict[str, np.ndarray] = {}
        for layer in self.layers():
            arrays.update({f"{layer}:min": self.low[layer], f"{layer}:max": self.high[layer],
                           f"{layer}:sq": self.square[layer], f"{layer}:n": np.array(self.batches[layer])})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Ranges:
        ranges = cls()
        for key, value in arrays.items():
            layer, side = key.rsplit(":", 1)
            if side == "n":
                ranges.batches[layer] = int(value)
            else:
                {"min": ranges.low, "max": ranges.high, "sq": ranges.square}[side][layer] = np.asarray(value)
        return ranges


@dataclass(frozen=True)
class StaticPlan:
    """What the static graph of one engine is written from: calibrated ranges and the graph form.

    ``engine`` "onnxruntime": the activation is scaled per channel and quantized to uint8 with one scale and zero
    point (``QuantizeLinear``), then ``MatMulIntegerToFloat`` with the smoothed int8 weight. "openvino": the same
    arithmetic as QuantizeLinear / DequantizeLinear pairs, which OpenVINO's CPU plugin runs as INT8 layers.
    ``alpha`` fixes the SmoothQuant strength; None picks it per layer (:func:`quantize_layer`).
    """

    ranges: Ranges
    engine: str
    alpha: float | None = None


@dataclass(frozen=True)
class Quantized:
    """One linear layer's static quantization: the smoothed int8 weight and the activation's scale and zero point."""

    weight: np.ndarray  # int8 [in, out]
    weight_scale: np.ndarray  # float32 [out]
    inverse_smooth: np.ndarray  # float32 [in]: the activation is multiplied by this before quantizing
    scale: float
    zero_point: int
    alpha: float
    noise: float  # the estimated output noise power (see quantize_layer)


def _smoothing(matrix: np.ndarray, amax: np.ndarray, alpha: float) -> np.ndarray:
    if not alpha:
        return np.ones_like(amax)
    wmax = np.maximum(np.abs(matrix).max(axis=1), 1e-5)
    smooth: np.ndarray = np.clip(amax ** alpha / wmax ** (1.0 - alpha), 1e-5, 1e5).astype(np.float32)
    return smooth


def _quantize_with(matrix: np.ndarray, ranges: Ranges, name: str, alpha: float) -> Quantized:
    low, high, square = ranges.low[name], ranges.high[name], ranges.square[name]
    smooth = _smoothing(matrix, np.maximum(np.maximum(np.abs(low), np.abs(high)), 1e-5), alpha)
    lo = min(float((low / smooth).min()), 0.0)
    hi = max(float((high / smooth).max()), 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    zero_point = int(np.clip(np.rint(-lo / scale), 0, 255))
    smoothed = matrix * smooth[:, None]
    weight, weight_scale = quantize_columns(smoothed)
    # rounding noise of the activations (step `scale`) through the weights, plus that of each weight column (step
    # weight_scale) through the activations' mean squares: uniform rounding noise has power step^2 / 12
    activation_noise = scale ** 2 / 12.0 * float(np.square(smoothed).sum())
    weight_noise = float(np.square(weight_scale).sum()) / 12.0 * float((square / np.square(smooth)).sum())
    return Quantized(weight, weight_scale, (1.0 / smooth).astype(np.float32), scale, zero_point, alpha,
                     activation_noise + weight_noise)


def quantize_layer(matrix: np.ndarray, ranges: Ranges, name: str, alpha: float | None = None) -> Quantized:
    """Smooth, then quantize a float ``[in, out]`` weight for the input whose statistics ``ranges`` holds as ``name``.

    With ``alpha`` None the SmoothQuant strength is chosen per layer from :data:`ALPHAS`: the one with the least
    estimated output noise (activation and weight rounding noise, from the calibrated ranges and mean squares).
    """
    if alpha is not None:
        return _quantize_with(matrix, ranges, name, alpha)
    return min((_quantize_with(matrix, ranges, name, a) for a in ALPHAS), key=lambda q: q.noise)
