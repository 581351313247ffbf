"""Backends, precision variants, fidelity records and the auto choice, on the tiny lookup model."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import ConfigError, MissingDependencyError
from m3search.models.encoders.base import stack_dense
from m3search.models.encoders.pooled import OnnxEncoder
from m3search.models.prepare.cache import PreparedModel, load_prepared
from m3search.models.runtime import backends
from m3search.models.runtime import sessions as runtime
from m3search.models.runtime.sessions import RunOptions
from m3search.settings import DEFAULT_BATCH_TOKENS, Settings

from ..conftest import TINY_SPEC

TEXTS = ["the man is playing guitar", "a cat sat on the mat", "dog runs fast"]
needs_openvino = pytest.mark.skipif(not backends.openvino_available(), reason="the 'openvino' extra is not installed")


@pytest.fixture
def tiny_copy(tiny_prepared: PreparedModel, tmp_path: Path) -> PreparedModel:
    """A private copy of the tiny prepared model: variants are written beside it."""
    directory = shutil.copytree(tiny_prepared.directory, tmp_path / "prepared")
    prepared = load_prepared(directory)
    assert prepared is not None
    return prepared


@pytest.fixture
def make(tiny_copy: PreparedModel, tmp_path: Path) -> Callable[..., OnnxEncoder]:
    def factory(backend: str, precision: str, **options: object) -> OnnxEncoder:
        run = RunOptions(home=tmp_path / "home", **options)  # type: ignore[arg-type]
        return OnnxEncoder(TINY_SPEC, lambda: tiny_copy, backend=backend, precision=precision, options=run)

    return factory


def test_unknown_backend_and_precision_are_config_errors(make: Callable[..., OnnxEncoder]) -> None:
    with pytest.raises(ConfigError, match="backend"):
        make("tensorrt", "fp32")
    with pytest.raises(ConfigError, match="precision"):
        make("onnxruntime", "int4")


def test_int8_is_an_alias_of_int8_dynamic(make: Callable[..., OnnxEncoder]) -> None:
    assert make("onnxruntime", "int8").precision == "int8-dynamic"


def test_bf16_is_refused_on_onnxruntime(make: Callable[..., OnnxEncoder]) -> None:
    with pytest.raises(ConfigError, match="bf16 runs on the openvino backend"):
        make("onnxruntime", "bf16").encode(TEXTS)


def test_openvino_missing_names_the_extra(make: Callable[..., OnnxEncoder], monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_openvino(name: str, *args: object, **kwargs: object) -> object:
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("no openvino")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.delitem(__import__("sys").modules, "openvino", raising=False)
    with pytest.raises(MissingDependencyError, match=r"m3search\[openvino\]"):
        make("openvino", "fp32").encode(TEXTS)


def test_int8_dynamic_fidelity_is_measured_once_and_recorded(make: Callable[..., OnnxEncoder]) -> None:
    encoder = make("onnxruntime", "int8-dynamic")
    encoder.encode(TEXTS)
    figures = encoder.prepared.variant("onnxruntime", "int8-dynamic")["fidelity"]  # type: ignore[index]
    assert figures["texts"] == 64 and figures["dense_cos_mean"] == pytest.approx(1.0)
    on_disk = json.loads((encoder.prepared.directory / "manifest.json").read_text())
    assert on_disk["variants"]["onnxruntime/int8-dynamic"]["fidelity"] == figures


def test_fidelity_below_threshold_refuses_unless_forced(
    make: Callable[..., OnnxEncoder], tiny_copy: PreparedModel
) -> None:
    tiny_copy.record("onnxruntime", "int8-dynamic", {"fidelity": {"texts": 64, "dense_cos_mean": 0.97}})
    from m3search.errors import FidelityError

    with pytest.raises(FidelityError, match=r"0\.9700"):
        make("onnxruntime", "int8-dynamic").encode(TEXTS)
    assert len(make("onnxruntime", "int8-dynamic", force_precision=True).encode(TEXTS)) == 3
    assert len(make("onnxruntime", "int8-dynamic", fidelity_threshold=0.95).encode(TEXTS)) == 3


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "int8-dynamic"])
def test_openvino_matches_onnxruntime(make: Callable[..., OnnxEncoder], precision: str) -> None:
    reference = stack_dense(make("onnxruntime", "fp32").encode(TEXTS))
    encoder = make("openvino", precision)
    got = encoder.encode(TEXTS)
    assert all(e.tokens == r.tokens for e, r in zip(got, make("onnxruntime", "fp32").encode(TEXTS), strict=True))
    assert np.allclose(stack_dense(got), reference, atol=0.02)
    entry = encoder.prepared.variant("openvino", precision)
    assert entry is not None and (encoder.prepared.directory / entry["file"]).is_file()
    assert entry["fidelity"]["dense_cos_mean"] > 0.999


@needs_openvino
def test_openvino_keeps_the_nan_guard(make: Callable[..., OnnxEncoder]) -> None:
    from m3search.errors import NonFiniteEmbeddingError

    with pytest.raises(NonFiniteEmbeddingError, match="input 1"):
        make("openvino", "fp32", force_precision=True).encode(["the cat", "nan"])


@needs_openvino
def test_bf16_needs_native_support(make: Callable[..., OnnxEncoder]) -> None:
    encoder = make("openvino", "bf16")
    if backends.cpu_supports_bf16():
        assert len(encoder.encode(TEXTS)) == 3
    else:
        with pytest.raises(ConfigError, match="no native bf16"):
            encoder.encode(TEXTS)


def test_int8_static_records_its_calibration_and_rebuilds_for_new_texts(
    make: Callable[..., OnnxEncoder], tmp_path: Path
) -> None:
    make("onnxruntime", "int8-static", calibration_size=16).encode(TEXTS)
    prepared = load_prepared(tmp_path / "prepared")
    assert prepared is not None
    first = prepared.variant("onnxruntime", "int8-static")
    assert first is not None and first["quantization"]["calibration_batches"] == 2
    mine = tmp_path / "mine.txt"
    mine.write_text("the dog runs\na cat sat\n", encoding="utf-8")
    make("onnxruntime", "int8-static", calibration_file=mine).encode(TEXTS)
    second = load_prepared(tmp_path / "prepared").variant("onnxruntime", "int8-static")  # type: ignore[union-attr]
    assert second is not None and second["calibration"] != first["calibration"]
    assert second["quantization"]["calibration_batches"] == 1


def test_empty_calibration_file_is_an_input_error(make: Callable[..., OnnxEncoder], tmp_path: Path) -> None:
    from m3search.errors import InputError

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="holds no text"):
        make("onnxruntime", "int8-static", calibration_file=empty).encode(TEXTS)


def test_auto_with_one_backend_needs_no_measurement(
    make: Callable[..., OnnxEncoder], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "available_backends", lambda: ["onnxruntime"])
    encoder = make("auto", "fp32")
    encoder.encode(TEXTS)
    assert encoder.backend == "onnxruntime"



@needs_openvino
def test_the_session_loader_leaves_its_caller_unchanged(make: Callable[..., OnnxEncoder]) -> None:
    """load_session returns the backend "auto" chose and its budget; only the encoder applies them to itself."""
    encoder = make("auto", "fp32")
    loaded = runtime.load_session(encoder)
    assert (encoder.backend, encoder.batch_tokens) == ("auto", DEFAULT_BATCH_TOKENS)
    assert loaded.backend in ("onnxruntime", "openvino") and loaded.batch_tokens > 0
    assert loaded.session.run(None, encoder.feeds(TEXTS[:1])[0])
    encoder.encode(TEXTS)  # the encoder's own session: it applies what the loader chose
    assert encoder.backend == loaded.backend

@needs_openvino
def test_auto_measures_once_and_caches(
    make: Callable[..., OnnxEncoder], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[str] = []
    measure = runtime._tokens_per_s

    def spy(encoder: OnnxEncoder, texts: list[str]) -> float:
        calls.append(encoder.backend)
        return measure(encoder, texts)

    monkeypatch.setattr(runtime, "_tokens_per_s", spy)
    first = make("auto", "fp32")
    first.encode(TEXTS)
    assert first.backend in ("onnxruntime", "openvino")
    assert sorted(set(calls)) == ["onnxruntime", "openvino"]
    cache = json.loads((tmp_path / "home" / "autotune.json").read_text())
    (entry,) = cache.values()
    assert entry["backend"] == first.backend and entry["batch_tokens"] == first.batch_tokens
    assert set(entry["tokens_per_s"]) == {"onnxruntime", "openvino"}
    calls.clear()
    second = make("auto", "fp32")
    second.encode(TEXTS)
    assert calls == [] and second.backend == first.backend


def test_threads_are_shared_among_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert Settings(sessions=1).effective_threads() == 8
    assert Settings(sessions=4).effective_threads() == 2
    assert Settings(sessions=16).effective_threads() == 1
    assert Settings(sessions=4, threads=3).effective_threads() == 3


def _per_text_graph(path: Path) -> Path:
    """input_ids -> x[b, s, :] = id * (1, 2, 3, 4) -> per-text INT8 linear: "y" [B, S, 3] and its sum "total" [B, 3]."""
    from m3search.models.prepare.builder.writer import FLOAT, INT64, GraphWriter

    w = GraphWriter(path, int8=True)
    ids = w.input("input_ids", INT64, ["batch", "sequence"])
    w.input("attention_mask", INT64, ["batch", "sequence"])
    x = w.op("Mul", [w.op("Unsqueeze", [w.op("Cast", [ids], to=FLOAT), w.const([-1])]),
                     w.const([1.0, 2.0, 3.0, 4.0], np.float32)])
    y = w.linear(x, np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32), "layer")
    w.output(y, "y", ["batch", "sequence", 3])
    w.output(w.reduce("ReduceSum", y, [1], keepdims=False), "total", ["batch", 3])
    w.save("test")
    return path


@pytest.mark.parametrize("threads", [1, 2])  # 2: the batch's texts run two at a time
def test_a_per_text_int8_graph_runs_each_text_alone_without_its_padding(tmp_path: Path, threads: int) -> None:
    import onnxruntime as ort

    path = _per_text_graph(tmp_path / "g.onnx")
    session = backends.OrtSession(path, threads, spinning=False)
    assert session.per_text
    ids = np.array([[3, 1, 2, 0, 0], [900, 40, 7, 1000, 5], [2, 0, 0, 0, 0]], np.int64)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], np.int64)
    y, total = session.run(None, {"input_ids": ids, "attention_mask": mask})
    assert y.shape == (3, 5, 3) and total.shape == (3, 3)
    for row, length in enumerate((3, 5, 1)):
        alone = session.run(["y", "total"], {"input_ids": ids[row : row + 1, :length],
                                             "attention_mask": mask[row : row + 1, :length]})
        np.testing.assert_array_equal(y[row, :length], alone[0][0])  # bitwise: the batch does not reach it
        np.testing.assert_array_equal(total[row], alone[1][0])
        assert not y[row, length:].any()  # padding positions come back as zeros
    # the graph run on the whole batch at once scales the small rows by the large one's range: they would change
    batched = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["y"], {"input_ids": ids, "attention_mask": mask})[0]
    assert not np.array_equal(batched[0, :3], y[0, :3])


def test_texts_of_a_narrow_graph_run_side_by_side_on_a_single_thread_companion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _per_text_graph(tmp_path / "g.onnx")
    ids = np.array([[900, 40, 7, 1000, 5], [3, 1, 2, 0, 0], [2, 0, 0, 0, 0]], np.int64)
    mask = (ids > 0).astype(np.int64)
    single = backends.OrtSession(path, 1, spinning=True)
    expected = single.run(None, {"input_ids": ids, "attention_mask": mask})
    opened: list[int] = []
    build = backends.build_session
    monkeypatch.setattr(backends, "build_session", lambda p, threads, **kw: opened.append(threads) or build(
        p, threads, **kw))
    session = backends.OrtSession(path, 2, spinning=True)
    assert opened == [2]
    one = session.run(None, {"input_ids": ids[:1], "attention_mask": mask[:1]})  # one text: the session itself
    assert opened == [2]
    np.testing.assert_array_equal(one[0][0], expected[0][0])
    for _ in range(2):  # the companion opens once, on the first batch of short texts
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)  # bitwise: the same graph, each text alone
    assert opened == [2, 1]
    monkeypatch.setattr(backends, "NARROW", 3)  # a wider graph keeps one session: its threads scale
    large = backends.OrtSession(path, 2, spinning=True)
    large.run(None, {"input_ids": ids, "attention_mask": mask})
    assert opened == [2, 1, 2]
    monkeypatch.setattr(backends, "NARROW", 4)
    monkeypatch.setattr(backends, "COMPANION_TEXT", 3)  # a batch with a longer text runs on the session itself
    backends.OrtSession(path, 2, spinning=True).run(None, {"input_ids": ids, "attention_mask": mask})
    assert opened == [2, 1, 2, 2]


def _wide_graph(path: Path, *, share: Path | None = None) -> Path:
    """input_ids -> x[b, s, :] = sin(id * (1..256)) -> INT8 linear (a 2 KiB weight) "y" [B, S, 8], and "first" [B, 8]
    its first token: per text, or with ``share`` the rows graph of that graph (per row, sharing its weights)."""
    from m3search.models.prepare.builder.writer import FLOAT, INT64, GraphWriter

    w = GraphWriter(path, int8=True, rows=share is not None, share=share)
    ids = w.input("input_ids", INT64, ["batch", "sequence"])
    w.input("attention_mask", INT64, ["batch", "sequence"])
    x = w.op("Sin", [w.op("Mul", [w.op("Unsqueeze", [w.op("Cast", [ids], to=FLOAT), w.const([-1])]),
                                  w.const(np.arange(1, 257) / 256, np.float32)])])
    y = w.linear(x, np.random.default_rng(2).normal(size=(8, 256)).astype(np.float32), "layer")
    w.output(y, "y", ["batch", "sequence", 8])
    w.output(w.op("Gather", [y, w.const(0)], axis=1), "first", ["batch", 8])
    w.save("test")
    return path


def test_a_rows_graph_shares_the_int8_graphs_weights(tmp_path: Path) -> None:
    import onnx

    from m3search.models.prepare.builder.writer import SCALE_KEY, rows_graph

    path = _wide_graph(tmp_path / "model.int8.onnx")
    rows = _wide_graph(rows_graph(path), share=path)
    assert rows.name == "model.int8.rows.onnx" and not (tmp_path / "model.int8.rows.onnx.data").exists()

    def stored(graph: Path) -> dict[str, dict[str, str]]:
        tensors = onnx.load(str(graph), load_external_data=False).graph.initializer
        return {t.name: {e.key: e.value for e in t.external_data} for t in tensors if t.external_data}

    # the weight is not written twice; the graph's own numbered constant (its 1 KiB ramp) is appended
    assert stored(rows)["layer.int8"] == stored(path)["layer.int8"]
    assert {e["location"] for e in stored(rows).values()} == {"model.int8.onnx.data"}
    model = onnx.load(str(rows))  # its external tensors load from the shared file
    assert {p.key: p.value for p in model.metadata_props}[SCALE_KEY] == "row"
    assert "DynamicQuantizeMatMul" not in {n.op_type for n in model.graph.node}
    ids = np.array([[7, 300, 12, 9, 0, 0]], np.int64)
    feed = {"input_ids": ids[:, :4], "attention_mask": np.ones((1, 4), np.int64)}
    per_text, per_row = (backends.build_session(p, 1, spinning=False).run(["y"], feed)[0] for p in (path, rows))
    np.testing.assert_allclose(per_row, per_text, rtol=0.05, atol=0.05)  # the same layer, quantized otherwise


def test_short_texts_of_a_wide_graph_run_in_batches_of_its_rows_graph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from m3search.models.prepare.builder.writer import rows_graph

    path = _wide_graph(tmp_path / "model.int8.onnx")
    rows = _wide_graph(rows_graph(path), share=path)
    monkeypatch.setattr(backends, "NARROW", 0)
    monkeypatch.setattr(backends, "SHORT_TEXT", 4)
    session = backends.OrtSession(path, 2, spinning=True)
    ids = np.array([[5, 9, 300, 2, 7, 11], [3, 1, 2, 0, 0, 0], [40, 7, 1000, 5, 0, 0], [2, 0, 0, 0, 0, 0]], np.int64)
    mask = (ids > 0).astype(np.int64)
    y, first = session.run(["y", "first"], {"input_ids": ids, "attention_mask": mask})
    assert y.shape == (4, 6, 8) and first.shape == (4, 8)
    plain = {p: backends.build_session(p, 1, spinning=False) for p in (path, rows)}
    for row, length in enumerate((6, 3, 4, 1)):
        feed = {"input_ids": ids[row : row + 1, :length], "attention_mask": mask[row : row + 1, :length]}
        expected = plain[rows if length <= 4 else path].run(["y", "first"], feed)  # short texts: the rows graph
        np.testing.assert_allclose(y[row, :length], expected[0][0], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(first[row], expected[1][0], rtol=1e-6, atol=1e-6)
        assert not y[row, length:].any()
    alone = session.run(["y"], {"input_ids": ids[1:2, :3], "attention_mask": mask[1:2, :3]})[0]
    np.testing.assert_array_equal(alone[0], y[1, :3])  # alone or in a batch: the same vector


def test_a_per_text_graph_records_its_width_for_the_runtime(tmp_path: Path) -> None:
    import onnx

    from m3search.models.prepare.builder.writer import WIDTH_KEY

    path = _per_text_graph(tmp_path / "g.onnx")
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert props[WIDTH_KEY] == "4"  # the input width of its first INT8 product, read from the session's metadata
    assert backends.OrtSession(path, 2, spinning=True)._companion  # 4 <= NARROW: short texts side by side


def test_a_per_text_session_refuses_left_padding(tmp_path: Path) -> None:
    session = backends.OrtSession(_per_text_graph(tmp_path / "g.onnx"), 1, spinning=False)
    with pytest.raises(ConfigError, match="padded on the right"):
        session.run(None, {"input_ids": np.ones((2, 3), np.int64),
                           "attention_mask": np.array([[0, 1, 1], [1, 1, 1]], np.int64)})


def test_a_per_text_session_groups_more_texts_per_call(make: Callable[..., OnnxEncoder], tmp_path: Path) -> None:
    int8, fp32 = make("onnxruntime", "int8-dynamic"), make("onnxruntime", "fp32")
    int8._session.set(backends.OrtSession(_per_text_graph(tmp_path / "g.onnx"), 1, spinning=False))
    assert int8.batch_budget() == max(DEFAULT_BATCH_TOKENS, 8192)  # its texts run unpadded, one per thread
    assert fp32.batch_budget() == DEFAULT_BATCH_TOKENS  # padded batches stay within the measured default
