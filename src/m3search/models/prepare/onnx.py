"""ONNX Runtime: the one place that builds inference sessions, plus graph fusion and INT8 quantization."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from m3search.errors import ModelFormatError

log = logging.getLogger(__name__)

# Dynamic INT8 with per-channel weight scales. Per-tensor scales ruin quality (MiniLM mean cosine 0.94 vs
# 0.993 per-channel; ../shared/notes/performance.md). Activations stay uint8 (u8s8 kernels are fast here;
# s8s8 ones are 30x slower).
# The embedding tables stay fp32: quantizing them costs fidelity (MiniLM pair cosine off by 0.012 instead of
# 0.005) and buys no speed.
INT8_OPS = ("MatMul", "Attention")
EMBEDDING_OPS = ("Gather", "EmbedLayerNormalization")
QUANTIZATION = {
    "method": "dynamic",
    "weights": "int8",
    "per_channel": True,
    "activations": "uint8",
    "ops": list(INT8_OPS),
}


# Fusions ONNX Runtime would apply at load time that make the builder's graphs slower: its SkipLayerNormalization
# kernel ran 7x slower than Add + LayerNormalization here (AMD EPYC, AVX-512; [250, 384]: 244 against 35 us).
UNFUSED = ["SkipLayerNormFusion"]


def build_session(path: Path, threads: int, *, spinning: bool = True) -> Any:
    """Create an ONNX Runtime CPU session for ``path`` with ``threads`` intra-op threads.

    ``spinning=False`` stops idle worker threads from busy-waiting, which matters when several sessions
    share the cores.

    Raises:
        ModelFormatError: the file is missing or not a valid ONNX model.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=UNFUSED)
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable files
        raise ModelFormatError(
            f"ONNX Runtime cannot load {path}: {exc}; delete it and run 'm3search models prepare --force'"
        ) from exc


def is_large(path: Path) -> bool:
    """Whether a graph plus its external data in ``path``'s folder is near protobuf's 2 GB limit."""
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.is_file()) > 1_800_000_000


def fuse_graph(src: Path, dst: Path, num_heads: int, hidden_size: int) -> bool:
    """Fuse attention, layer norm and GELU with onnxruntime's transformer optimizer.

    Returns False (and copies nothing) when the optimizer does not support the graph; the caller then
    uses the unfused graph, which ONNX Runtime still optimises when the session is built.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        model = optimize_model(
            str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, use_gpu=False
        )
    except Exception as exc:  # the optimizer raises assorted errors on graphs it does not know
        log.warning("graph fusion skipped for %s: %s", src.name, exc)
        return False
    large = is_large(src)
    model.save_model_to_file(str(dst), use_external_data_format=large, all_tensors_to_one_file=True)
    return True


def quantize_int8(src: Path, dst: Path, *, embeddings: bool = False) -> None:
    """Dynamic INT8 quantization of MatMul and fused Attention weights, per-channel.

    With ``embeddings`` the word-embedding table is quantized too (needed to fit BGE-M3 in ~570 MB).
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
        op_types_to_quantize=[*INT8_OPS, *(EMBEDDING_OPS if embeddings else ())],
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
