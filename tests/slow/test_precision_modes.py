"""Backends and precision modes on real small models: fidelity recorded per output, refusals, CLI, auto."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from m3search import load_encoder, stack_dense
from m3search.cli.app import main
from m3search.errors import FidelityError
from m3search.models.runtime.backends import openvino_available
from m3search.settings import Settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not openvino_available(), reason="the 'openvino' extra is not installed"),
]
TEXTS = [
    "A man is playing a guitar.",
    "Debian is a free operating system for your computer.",
    "aerodynamic heating of a flat plate in hypersonic flow " * 20,
    *[f"passage number {i} about boundary layers and shock waves" for i in range(10)],
]


@pytest.mark.parametrize("precision", ["fp32", "int8-dynamic", "int8-static"])
def test_minilm_openvino_modes_stay_close_to_fp32(settings: Settings, precision: str) -> None:
    reference = stack_dense(load_encoder("all-minilm-l6-v2", precision="fp32", settings=settings).encode(TEXTS))
    encoder = load_encoder("all-minilm-l6-v2", backend="openvino", precision=precision,  # type: ignore[arg-type]
                           settings=settings)
    cosines = (stack_dense(encoder.encode(TEXTS)) * reference).sum(axis=1)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.97
    entry = encoder.prepared.variant("openvino", precision)  # type: ignore[attr-defined]
    assert entry["fidelity"]["texts"] == 64 and entry["fidelity"]["dense_cos_mean"] >= 0.99
    if precision == "int8-static":
        assert entry["quantization"]["method"] == "m3search builder, static" and len(entry["calibration"]) == 16


def test_threshold_refuses_int8_and_force_overrides(settings: Settings) -> None:
    strict = settings.model_copy(update={"fidelity_threshold": 0.9999})
    with pytest.raises(FidelityError, match=r"onnxruntime/int8-dynamic keeps dense mean cosine 0\.99"):
        load_encoder("all-minilm-l6-v2", precision="int8", settings=strict).encode(TEXTS)
    forced = strict.model_copy(update={"force_precision": True})
    assert len(load_encoder("all-minilm-l6-v2", precision="int8", settings=forced).encode(TEXTS)) == len(TEXTS)


def test_cli_backend_precision_and_refusal(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["embed", "-m", "all-minilm-l6-v2", "--backend", "openvino", "--precision", "int8-dynamic", "--json",
              "hello world"])
    assert info.value.code in (0, None)
    assert len(json.loads(capsys.readouterr().out)["dense"]) == 384
    monkeypatch.setenv("M3SEARCH_FIDELITY_THRESHOLD", "0.9999")
    with pytest.raises(SystemExit) as info:
        main(["embed", "-m", "all-minilm-l6-v2", "--precision", "int8", "hello"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and "below the threshold" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as info:
        main(["embed", "-m", "all-minilm-l6-v2", "--precision", "int8", "--force-precision", "hello"])
    assert info.value.code in (0, None)
    with pytest.raises(SystemExit) as info:
        main(["embed", "-m", "all-minilm-l6-v2", "--backend", "cuda", "hello"])
    assert info.value.code == 2 and "--backend must be" in capsys.readouterr().err


def test_cli_prepare_builds_and_reports_a_mode(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["models", "prepare", "all-minilm-l6-v2", "--backend", "openvino", "--precision", "fp32"])
    out = capsys.readouterr().out
    assert info.value.code in (0, None)
    assert "ready: openvino/fp32" in out and "openvino/fp32:" in out and "dense_cos_mean 1.0000" in out
    prepared = load_encoder("all-minilm-l6-v2", settings=settings).prepared  # type: ignore[attr-defined]
    # OpenVINO compiles the builder's fused ONNX graph itself: no IR copy on disk (BGE-M3: 2.3 GB saved)
    assert prepared.variant("openvino", "fp32")["file"] == prepared.variant("onnxruntime", "fp32")["file"]
    assert not (prepared.directory / "openvino" / "model.fp32.xml").exists()


def test_auto_picks_a_measured_backend(settings: Settings) -> None:
    encoder = load_encoder("all-minilm-l6-v2", backend="auto", precision="int8-dynamic", settings=settings)
    encoder.encode(TEXTS[:2])
    cache = json.loads((settings.home / "autotune.json").read_text())
    (key,) = [k for k in cache if k.startswith("all-minilm-l6-v2/") and "/int8-dynamic/" in k]
    rates = cache[key]["tokens_per_s"]
    assert encoder.backend == cache[key]["backend"] == max(rates, key=lambda b: rates[b])  # type: ignore[attr-defined]


def test_bge_m3_openvino_fidelity_per_output(tiny_m3_dir: Path, settings: Settings) -> None:
    outputs = ["dense", "sparse", "colbert"]
    exact = load_encoder("bge-m3", path=tiny_m3_dir, precision="fp32", settings=settings)
    approx = load_encoder("bge-m3", path=tiny_m3_dir, backend="openvino", precision="int8-static", settings=settings)
    got = approx.encode(TEXTS[:4], outputs=outputs)  # type: ignore[arg-type]
    ref = exact.encode(TEXTS[:4], outputs=outputs)  # type: ignore[arg-type]
    for r, g in zip(ref, got, strict=True):
        assert g.colbert is not None and r.colbert is not None and g.colbert.shape == r.colbert.shape
        assert g.sparse is not None and g.tokens == r.tokens
        assert float(np.dot(r.dense, g.dense)) > 0.95  # type: ignore[arg-type]
    figures = approx.prepared.variant("openvino", "int8-static")["fidelity"]  # type: ignore[attr-defined]
    assert {"dense_cos_mean", "sparse_cos_mean", "sparse_top10_overlap", "sparse_weight_error",
            "colbert_maxsim_error_mean"} <= set(figures)
    assert 0.0 <= figures["sparse_top10_overlap"] <= 1.0 and figures["colbert_maxsim_error_mean"] >= 0.0
