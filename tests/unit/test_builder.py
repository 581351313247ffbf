"""The torch-free builder's readers and writer: safetensors tensor by tensor, restricted ``.pt`` reading, INT8 maths."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from m3search.errors import ModelFormatError
from m3search.models.prepare import builder
from m3search.models.prepare.builder.checkpoint import Checkpoint, SafeTensors, read_torch_state_dict
from m3search.models.prepare.builder.quantize import PROBE, quantize_columns, quantize_rows
from m3search.models.prepare.builder.writer import ALIGN, SCALE_KEY, WIDTH_KEY, GraphWriter
from tests.references import import_or_skip


def _save_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        data = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def test_safetensors_are_read_as_float32_including_bf16(tmp_path: Path) -> None:
    values = np.array([[1.5, -2.25], [3.0, 0.125]], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)
    _save_safetensors(tmp_path / "w.safetensors", {"a": ("F32", values), "b": ("BF16", bf16),
                                                   "c": ("F16", values.astype(np.float16))})
    file = SafeTensors(tmp_path / "w.safetensors")
    try:
        for name in ("a", "b", "c"):
            np.testing.assert_array_equal(file.get(name), values)
        assert [b.tolist() for b in file.rows("a", 1)] == [[[1.5, -2.25]], [[3.0, 0.125]]]
    finally:
        file.close()


def test_truncated_safetensors_are_a_clear_error(tmp_path: Path) -> None:
    _save_safetensors(tmp_path / "w.safetensors", {"a": ("F32", np.ones((64, 64), np.float32))})
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[:-100])
    with pytest.raises(ModelFormatError, match="truncated"):
        SafeTensors(tmp_path / "w.safetensors").get("a")


def test_checkpoint_names_drop_the_architecture_prefix_and_read_old_layer_norm_names(tmp_path: Path) -> None:
    ones = np.ones(4, np.float32)
    _save_safetensors(tmp_path / "model.safetensors", {
        "bert.embeddings.word_embeddings.weight": ("F32", np.zeros((3, 4), np.float32)),
        "bert.embeddings.LayerNorm.gamma": ("F32", ones), "cls.predictions.bias": ("F32", ones * 2)})
    ckpt = Checkpoint(tmp_path)
    try:
        assert ckpt.prefix == "bert."
        np.testing.assert_array_equal(ckpt.get("embeddings.LayerNorm.weight"), ones)
        np.testing.assert_array_equal(ckpt.get("cls.predictions.bias", prefixed=False), ones * 2)
        with pytest.raises(ModelFormatError, match="no tensor"):
            ckpt.get("encoder.layer.0.output.dense.weight")
    finally:
        ckpt.close()


def _torch_zip(path: Path, payload: bytes, storages: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("touch /tmp/m3search-pwned",))


def test_pt_files_with_anything_but_tensors_are_refused_without_running_code(tmp_path: Path) -> None:
    _torch_zip(tmp_path / "evil.pt", pickle.dumps({"weight": _Evil()}), {})
    with pytest.raises(ModelFormatError, match="not allowed"):
        read_torch_state_dict(tmp_path / "evil.pt")
    assert not Path("/tmp/m3search-pwned").exists()
    (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"weight": 1}))  # the pre-zip format
    with pytest.raises(ModelFormatError, match="export"):
        read_torch_state_dict(tmp_path / "legacy.pt")


def test_pt_state_dicts_are_read_as_torch_wrote_them(tmp_path: Path) -> None:
    torch = import_or_skip("torch", "the export extra (torch) writes the reference file")  # the reader never imports it
    state = {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4).t(), "bias": torch.tensor([0.5, -1.0])}
    torch.save(state, tmp_path / "head.pt")
    read = read_torch_state_dict(tmp_path / "head.pt")
    assert set(read) == {"weight", "bias"}
    np.testing.assert_array_equal(read["weight"], state["weight"].numpy())  # a transposed (strided) view
    np.testing.assert_array_equal(read["bias"], state["bias"].numpy())
    buffer = io.BytesIO()
    torch.save({"weight": torch.ones(2, dtype=torch.bfloat16)}, buffer)
    (tmp_path / "bf16.pt").write_bytes(buffer.getvalue())
    np.testing.assert_array_equal(read_torch_state_dict(tmp_path / "bf16.pt")["weight"], np.ones(2, np.float32))


def test_int8_quantization_is_symmetric_per_channel_and_per_row() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(64, 16)).astype(np.float32) * np.linspace(0.01, 10, 16, dtype=np.float32)
    q, scale = quantize_columns(matrix)
    assert q.dtype == np.int8 and scale.shape == (16,) and np.abs(q).max() == 127
    assert np.abs(q * scale - matrix).max(axis=0).max() <= scale.max() / 2 + 1e-6
    rows, row_scale = quantize_rows(matrix.T.copy())
    np.testing.assert_array_equal(rows, q.T)
    np.testing.assert_allclose(row_scale, scale)


def test_weights_are_written_aligned_to_the_data_file(tmp_path: Path) -> None:
    writer = GraphWriter(tmp_path / "g.onnx", int8=False)
    writer.weight("a", np.ones((3, 500), np.float32))
    writer.weight("b", np.ones((7, 300), np.float32))
    writer.abort()
    offsets = [int(dict((e.key, e.value) for e in t.external_data)["offset"]) for t in writer.initializers]
    assert offsets == [0, ALIGN]
    assert (tmp_path / "g.onnx.data").stat().st_size == ALIGN + 7 * 300 * 4


def test_only_bert_like_safetensors_checkpoints_are_built_without_torch(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert not builder.supports(tmp_path)  # no safetensors: pickled weights go through the torch exporter
    _save_safetensors(tmp_path / "model.safetensors", {"x": ("F32", np.ones(2, np.float32))})
    assert builder.supports(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    assert not builder.supports(tmp_path)



def _one_linear(tmp_path: Path, weight: np.ndarray, *, probe: bool = False, rows: bool = False) -> Path:
    writer = GraphWriter(tmp_path / "linear.onnx", int8=True, probe=probe)
    x = writer.input("x", 1, ["batch", "sequence", weight.shape[1]])
    writer.output(writer.linear(x, weight, "layer", rows=rows), "y", ["batch", "sequence", weight.shape[0]])
    writer.save("test")
    return tmp_path / "linear.onnx"


def test_int8_linear_is_one_fused_product_per_text_and_the_graph_says_so(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    rng = np.random.default_rng(5)
    weight = rng.normal(size=(48, 32)).astype(np.float32)
    path = _one_linear(tmp_path, weight)
    graph = onnx.load(str(path))
    assert [n.op_type for n in graph.graph.node] == ["DynamicQuantizeMatMul", "Identity"]
    # ONNX Runtime runs texts alone; the width (the [32, 48] weight's input) decides how it runs short ones
    assert {p.key: p.value for p in graph.metadata_props} == {SCALE_KEY: "text", WIDTH_KEY: "32"}
    x = rng.normal(size=(1, 7, 32)).astype(np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = x @ weight.T
    assert (np.linalg.norm(y - expected) / np.linalg.norm(expected)) < 0.02


def test_probe_and_static_graphs_are_not_marked_per_text(tmp_path: Path) -> None:
    import onnx

    path = _one_linear(tmp_path, np.ones((4, 4), np.float32), probe=True)
    assert not onnx.load(str(path)).metadata_props


def test_int8_linear_quantizes_each_row_by_itself_with_one_blocked_quantize(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    weight = rng.normal(size=(48, 32)).astype(np.float32)
    path = _one_linear(tmp_path, weight, rows=True)
    graph = onnx.load(str(path))
    quantize = [n for n in graph.graph.node if n.op_type == "QuantizeLinear"]
    assert graph.opset_import[0].version == 21 and len(quantize) == 1
    assert {a.name: onnx.helper.get_attribute_value(a) for a in quantize[0].attribute}["block_size"] == 32
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(3, 5, 32)).astype(np.float32) * np.array([0.01, 1.0, 300.0], np.float32)[:, None, None]
    y = session.run(None, {"x": x})[0]
    expected = x @ weight.T
    error = np.linalg.norm(y - expected, axis=-1) / np.linalg.norm(expected, axis=-1)
    assert error.max() < 0.02  # every row at its own scale: the 0.01-sized rows are as exact as the 300-sized ones
    for i in range(3):  # a row's result does not depend on what else is in the batch
        np.testing.assert_array_equal(session.run(None, {"x": x[i : i + 1]})[0][0], y[i])


def test_the_probe_reports_each_linear_inputs_channel_ranges(tmp_path: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(4)
    path = _one_linear(tmp_path, rng.normal(size=(8, 6)).astype(np.float32), probe=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = rng.normal(size=(2, 4, 6)).astype(np.float32)
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"x": x}), strict=True))
    flat = x.reshape(-1, 6)
    np.testing.assert_allclose(out[f"{PROBE}layer:min"], flat.min(axis=0))
    np.testing.assert_allclose(out[f"{PROBE}layer:max"], flat.max(axis=0))
    np.testing.assert_allclose(out[f"{PROBE}layer:sq"], (flat**2).mean(axis=0), rtol=1e-5)
