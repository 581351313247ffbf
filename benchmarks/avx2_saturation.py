"""What INT8 vectors would be on a CPU with AVX2 but no AVX-512 VNNI / AVX-VNNI, emulated on any CPU.

ONNX Runtime's u8 x s8 integer MatMul uses ``vpmaddubsw`` on AVX2-only CPUs: each pair of adjacent products
``a[2i] * w[2i] + a[2i+1] * w[2i+1]`` is summed into a *saturated* int16 before the int32 accumulation (ONNX Runtime's
quantization guide warns of it); VNNI's ``vpdpbusd`` sums into int32 exactly. The builder quantizes activations per
row around 128 (uint8 1..255) and weights per channel to int8 (-127..127), so a pair can exceed 32767.

This script rewrites every ``MatMulIntegerToFloat`` of a prepared INT8 graph into the same arithmetic with the
pairwise int16 saturation made explicit (exact in float32: every partial sum is below 2**24), runs both graphs on
texts, and reports how far the emulated AVX2 vectors move from the exact INT8 ones and from fp32.
Reproduce: ``python benchmarks/avx2_saturation.py`` (MiniLM, the real weights; about a minute).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, cranfield_texts, machine, versions, write_results

CACHE = ROOT / ".cache" / "saturation"


def emulate_avx2(model: Any) -> Any:
    """A copy of ``model`` whose MatMulIntegerToFloat nodes saturate adjacent pairs of products to int16."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "MatMulIntegerToFloat":
            nodes.append(node)
            continue
        a, w, a_scale, w_scale, a_zero = node.input[:5]
        weight = numpy_helper.to_array(inits[w]).astype(np.float32)  # [K, N]
        k = weight.shape[0]
        p = node.name or node.output[0]
        extra = {f"{p}.even": weight[0::2][None], f"{p}.odd": weight[1::2][None], f"{p}.colsum": weight.sum(axis=0),
                 f"{p}.shape": np.array([-1, k // 2, 2], dtype=np.int64), f"{p}.axis": np.array([1], np.int64),
                 f"{p}.lo": np.array(-32768.0, np.float32), f"{p}.hi": np.array(32767.0, np.float32),
                 f"{p}.i0": np.array([0], np.int64), f"{p}.i1": np.array([1], np.int64),
                 f"{p}.last": np.array([2], np.int64)}
        graph.initializer.extend(numpy_helper.from_array(v, name) for name, v in extra.items())
        nodes += [
            helper.make_node("Cast", [a], [f"{p}.a"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Reshape", [f"{p}.a", f"{p}.shape"], [f"{p}.a2"]),  # [R, K/2, 2]
            helper.make_node("Slice", [f"{p}.a2", f"{p}.i0", f"{p}.i1", f"{p}.last"], [f"{p}.ae"]),  # [R, K/2, 1]
            helper.make_node("Slice", [f"{p}.a2", f"{p}.i1", f"{p}.last", f"{p}.last"], [f"{p}.ao"]),
            helper.make_node("Mul", [f"{p}.ae", f"{p}.even"], [f"{p}.pe"]),  # [R, K/2, N]
            helper.make_node("Mul", [f"{p}.ao", f"{p}.odd"], [f"{p}.po"]),
            helper.make_node("Add", [f"{p}.pe", f"{p}.po"], [f"{p}.sums"]),
            helper.make_node("Clip", [f"{p}.sums", f"{p}.lo", f"{p}.hi"], [f"{p}.sat"]),
            helper.make_node("ReduceSum", [f"{p}.sat", f"{p}.axis"], [f"{p}.acc"], keepdims=0),
            helper.make_node("Cast", [a_zero], [f"{p}.zp"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}.zp", f"{p}.colsum"], [f"{p}.corr"]),
            helper.make_node("Sub", [f"{p}.acc", f"{p}.corr"], [f"{p}.int"]),
            helper.make_node("Mul", [f"{p}.int", w_scale], [f"{p}.ws"]),
            helper.make_node("Mul", [f"{p}.ws", a_scale], [node.output[0]]),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    summed = (hidden * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
    return summed / np.linalg.norm(summed, axis=1, keepdims=True)


def main() -> None:
    import onnx
    import onnxruntime as ort

    from m3search import load_encoder
    from m3search.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text (memory: tokens x K/2 x N)")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    encoder: Any = load_encoder("all-minilm-l6-v2", precision="int8-dynamic", backend="onnxruntime",
                                settings=Settings(home=CACHE / "home"), threads=2)
    encoder.max_length = args.max_length
    encoder.encode(["warm up"])
    prepared = encoder.prepared
    exact_path, fp32_path = prepared.onnx_path("int8-dynamic"), prepared.onnx_path("fp32")
    emulated_model = emulate_avx2(onnx.load(str(exact_path)))
    # the pair sums of every integer MatMul become graph outputs, to count saturated pairs
    einsums = [n.output[0] for n in emulated_model.graph.node if n.output[0].endswith(".sums")]
    emulated_model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in einsums)
    emulated_path = CACHE / "emulated-avx2.onnx"
    onnx.save(emulated_model, str(emulated_path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in (("exact", exact_path), ("avx2", emulated_path), ("fp32", fp32_path))}
    texts = cranfield_texts()[: args.texts]
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
    saturated = total = 0
    for text in texts:  # one text at a time: the emulated pair sums are [tokens, K/2, N] floats
        feed = encoder.feeds([text], batch_size=1)[0]
        for name, session in sessions.items():
            inputs = {i.name: feed[i.name] for i in session.get_inputs()}
            outs = session.run(None, inputs)
            vectors[name].append(pooled(outs[0], feed["attention_mask"].astype(np.float32))[0])
            if name == "avx2":
                for sums in outs[1:]:
                    saturated += int(((sums > 32767) | (sums < -32768)).sum())
                    total += sums.size
    stacked = {name: np.stack(v) for name, v in vectors.items()}

    def cos(x: str, y: str) -> dict[str, float]:
        c = (stacked[x] * stacked[y]).sum(axis=1)
        return {"mean": float(c.mean()), "min": float(c.min())}

    result = {"machine": machine(), "versions": versions("m3search", "onnxruntime"), "texts": len(texts),
              "model": "all-minilm-l6-v2 (real weights), builder INT8 (per-row activations, per-channel weights)",
              "saturated_pairs": saturated, "pairs": total, "saturated_share": saturated / max(total, 1),
              "avx2_vs_exact_int8": cos("avx2", "exact"), "avx2_vs_fp32": cos("avx2", "fp32"),
              "exact_int8_vs_fp32": cos("exact", "fp32")}
    lines = [
        "# INT8 on AVX2 without VNNI (emulated): pairwise int16 saturation of u8 x s8 products", "",
        f"{result['model']}; {len(texts)} Cranfield abstracts, one at a time, up to {args.max_length} tokens; "
        f"{machine()['cpu']}. "
        "Reproduce: `python benchmarks/avx2_saturation.py`.", "",
        f"Saturated pairs: {saturated} of {total} ({100 * result['saturated_share']:.4f} %).", "",
        "| vectors | cosine mean | cosine min |", "| --- | --- | --- |",
        *[f"| {label} | {result[key]['mean']:.6f} | {result[key]['min']:.6f} |" for label, key in (
            ("emulated AVX2 vs exact INT8 (VNNI / AVX-512)", "avx2_vs_exact_int8"),
            ("emulated AVX2 vs fp32", "avx2_vs_fp32"), ("exact INT8 vs fp32", "exact_int8_vs_fp32"))],
    ]
    write_results(args.out, "avx2_saturation", result, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
