"""int8-static of builder-made models: calibrated on the INT8 graph (never an fp32 model in this process), the
ranges measured once and shared by ONNX Runtime's and OpenVINO's static graphs, close to fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from m3search import load_encoder, stack_dense
from m3search.models.prepare import static
from m3search.models.runtime.backends import openvino_available
from m3search.settings import Settings

pytestmark = pytest.mark.slow
TEXTS = ["A man is playing a guitar.", "Debian is a free operating system.",
         "aerodynamic heating of a flat plate in hypersonic flow " * 10]


def test_int8_static_never_opens_the_fp32_graph_and_shares_its_ranges(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = settings.model_copy(update={"home": tmp_path / "home"})
    opened: list[str] = []
    measured: list[int] = []
    real_session, real_measure = ort.InferenceSession.__init__, static._measure

    def session(self: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        opened.append(Path(str(path)).name)
        real_session(self, path, *args, **kwargs)

    def measure(*args: Any) -> Any:
        measured.append(1)
        return real_measure(*args)

    monkeypatch.setattr(ort.InferenceSession, "__init__", session)
    monkeypatch.setattr(static, "_measure", measure)
    encoder = load_encoder("all-minilm-l6-v2", backend="onnxruntime", precision="int8-static", settings=fresh)
    vectors = stack_dense(encoder.encode(TEXTS))
    # the fp32 fidelity reference is computed by a child process; this process only ran INT8 graphs
    assert "model.fp32.onnx" not in opened and {"probe.onnx", "model.int8-static.onnx"} <= set(opened)
    prepared = encoder.prepared  # type: ignore[attr-defined]
    entry = prepared.variant("onnxruntime", "int8-static")
    assert entry["quantization"]["method"] == "m3search builder, static"
    # ranges of each linear layer's input, and of each attention's projected Q, K, V (OpenVINO quantizes attention)
    assert entry["quantization"]["calibrated_layers"] == 6 * 5 and entry["fidelity"]["dense_cos_mean"] >= 0.99
    assert (prepared.directory / static.RANGES_FILE).is_file() and measured == [1]
    if openvino_available():
        other = load_encoder("all-minilm-l6-v2", backend="openvino", precision="int8-static", settings=fresh)
        same = stack_dense(other.encode(TEXTS))
        assert measured == [1]  # OpenVINO's static graph is written from the same ranges
        # the same linear layers; OpenVINO's graph also quantizes attention's Q, K and V (0.9988 measured)
        assert float((same * vectors).sum(axis=1).min()) >= 0.998
        import openvino as ov

        ir = ov.Core().read_model(str(other.prepared.path("openvino", "int8-static")))  # type: ignore[attr-defined]
        quantizers = [op for op in ir.get_ops() if op.get_type_name() == "FakeQuantize"]
        assert len(quantizers) == 6 * 7  # per layer: 4 linear layers' inputs, and attention's Q, K and V
        assert other.prepared.variant("openvino", "int8-static")["fidelity"]["dense_cos_mean"] >= 0.99  # type: ignore[attr-defined]


def test_a_new_calibration_set_measures_the_ranges_again(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = tmp_path / "mine.txt"
    texts.write_text("boundary layers\nshock waves at Mach 3\n", encoding="utf-8")
    fresh = settings.model_copy(update={"home": tmp_path / "home"})
    first = load_encoder("all-minilm-l6-v2", precision="int8-static", settings=fresh)
    first.encode(TEXTS[:1])
    kept = np.load(first.prepared.directory / static.RANGES_FILE)  # type: ignore[attr-defined]
    # two short texts give narrow ranges that clip others (fidelity about 0.94): forced, the point is the rebuild
    mine = fresh.model_copy(update={"calibration_file": texts, "force_precision": True})
    second = load_encoder("all-minilm-l6-v2", precision="int8-static", settings=mine)
    second.encode(TEXTS[:1])
    again = np.load(second.prepared.directory / static.RANGES_FILE)  # type: ignore[attr-defined]
    assert str(kept["digest"]) != str(again["digest"])
    # a damaged ranges file is measured again, not an error
    (second.prepared.directory / static.RANGES_FILE).write_bytes(b"not an npz")  # type: ignore[attr-defined]
    assert static.calibrated_ranges(second.prepared, [], "other").layers() == []  # type: ignore[attr-defined]
    assert second.prepared.variant("onnxruntime", "int8-static")["quantization"]["calibration_batches"] == 1  # type: ignore[attr-defined]
