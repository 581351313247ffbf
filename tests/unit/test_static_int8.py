"""Static INT8 arithmetic of the builder: calibrated ranges, SmoothQuant strength chosen per layer, saved ranges."""

from __future__ import annotations

import numpy as np
import pytest

from m3search.models.prepare.builder.quantize import PROBE, Quantized, Ranges, quantize_layer


def _ranges(name: str, x: np.ndarray) -> Ranges:
    ranges = Ranges()
    for part in np.array_split(x, 4):  # four calibration batches
        ranges.update({f"{PROBE}{name}:min": part.min(axis=0), f"{PROBE}{name}:max": part.max(axis=0),
                       f"{PROBE}{name}:sq": np.square(part).mean(axis=0)})
    return ranges


def _product(x: np.ndarray, q: Quantized) -> np.ndarray:
    """What the static graph computes: the smoothed input quantized to uint8, times the dequantized int8 weight."""
    codes = np.clip(np.rint(x * q.inverse_smooth / q.scale) + q.zero_point, 0, 255)
    return ((codes - q.zero_point) * q.scale) @ (q.weight.astype(np.float32) * q.weight_scale)


def _error(x: np.ndarray, matrix: np.ndarray, q: Quantized) -> float:
    exact = x @ matrix
    return float(np.linalg.norm(_product(x, q) - exact) / np.linalg.norm(exact))


@pytest.fixture
def outliers() -> tuple[np.ndarray, np.ndarray]:
    """Inputs with two outlier channels (as transformers' layer-norm outputs have) and a weight."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 64)).astype(np.float32)
    x[:, 3] *= 40.0
    x[:, 17] *= 25.0
    return x, (rng.normal(size=(64, 48)) * 0.05).astype(np.float32)


def test_ranges_keep_minima_maxima_and_mean_squares_over_batches(outliers: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = outliers
    ranges = _ranges("layer", x)
    assert np.array_equal(ranges.low["layer"], x.min(axis=0)) and np.array_equal(ranges.high["layer"], x.max(axis=0))
    assert np.allclose(ranges.square["layer"], np.square(x).mean(axis=0), rtol=1e-5)
    again = Ranges.from_arrays(ranges.to_arrays())  # as kept beside the prepared model
    assert again.layers() == ["layer"] and again.batches == {"layer": 4}
    for mine, theirs in ((ranges.low, again.low), (ranges.high, again.high), (ranges.square, again.square)):
        assert np.array_equal(mine["layer"], theirs["layer"])


def test_smoothing_is_chosen_per_layer_and_beats_plain_per_tensor_ranges(
    outliers: tuple[np.ndarray, np.ndarray],
) -> None:
    x, matrix = outliers
    ranges = _ranges("layer", x)
    chosen, plain = quantize_layer(matrix, ranges, "layer"), quantize_layer(matrix, ranges, "layer", alpha=0.0)
    assert plain.alpha == 0.0 and np.all(plain.inverse_smooth == 1.0)
    assert chosen.alpha > 0.0 and chosen.noise < plain.noise
    assert _error(x, matrix, chosen) < _error(x, matrix, plain) / 2
    assert _error(x, matrix, chosen) < 0.02
    # the product is unchanged by smoothing itself: only rounding moves it
    assert np.allclose((x * chosen.inverse_smooth) @ (matrix / chosen.inverse_smooth[:, None]), x @ matrix,
                       rtol=1e-4, atol=1e-4)


def test_an_input_without_outliers_is_left_unsmoothed_or_nearly() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 32)).astype(np.float32)
    matrix = (rng.normal(size=(32, 16)) * 0.1).astype(np.float32)
    q = quantize_layer(matrix, _ranges("flat", x), "flat")
    assert _error(x, matrix, q) < 0.02
    assert 0 <= q.zero_point <= 255 and q.scale > 0


def test_calibration_batches_are_cut_to_a_token_budget() -> None:
    from m3search.models.prepare.static import split_feed

    feed = {"input_ids": np.arange(8 * 512).reshape(8, 512), "attention_mask": np.ones((8, 512), np.int64)}
    parts = split_feed(feed, 2048)
    assert [p["input_ids"].shape for p in parts] == [(4, 512), (4, 512)]
    assert np.array_equal(np.concatenate([p["input_ids"] for p in parts]), feed["input_ids"])
    assert [p["input_ids"].shape for p in split_feed({"input_ids": np.zeros((3, 4096))}, 2048)] == [(1, 4096)] * 3
