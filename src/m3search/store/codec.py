"""Vectors as little-endian binary blobs (never JSON)."""

from __future__ import annotations

import numpy as np

from m3search.types import FloatArray, IntArray, SparseVector

DTYPES = {"float32": "<f4", "float16": "<f2"}


def dense_blob(vector: FloatArray, dtype: str) -> bytes:
    return np.ascontiguousarray(vector, dtype=DTYPES[dtype]).tobytes()


def dense_from(blob: bytes, dtype: str) -> FloatArray:
    return np.frombuffer(blob, dtype=DTYPES[dtype]).astype(np.float32)


def sparse_blobs(vector: SparseVector) -> tuple[bytes, bytes]:
    return vector.indices.astype("<i8").tobytes(), vector.values.astype("<f4").tobytes()


def sparse_from(indices: bytes, weights: bytes) -> SparseVector:
    ids: IntArray = np.frombuffer(indices, dtype="<i8").astype(np.int64)
    values: FloatArray = np.frombuffer(weights, dtype="<f4").astype(np.float32)
    return SparseVector(ids, values)


def colbert_blob(vectors: FloatArray) -> bytes:
    return np.ascontiguousarray(vectors, dtype="<f2").tobytes()


def colbert_from(blob: bytes, rows: int) -> FloatArray:
    flat = np.frombuffer(blob, dtype="<f2").astype(np.float32)
    return flat.reshape(rows, -1) if rows else flat.reshape(0, 0)
