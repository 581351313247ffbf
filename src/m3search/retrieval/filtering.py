"""Metadata filters evaluated in memory: each filtered key becomes an integer code per chunk, so a filter is one
``np.isin`` over codes instead of a JSON scan in SQL per query.

Matching is the SQL filter's (:func:`m3search.store.filters.filter_sql`): equality of JSON scalars, where
``true`` equals 1 and ``1.0`` equals 1, ``null`` matches only a key present with a null value, and objects or
arrays match nothing.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from m3search.store.filters import Scalar
from m3search.types import IntArray

BoolArray = npt.NDArray[np.bool_]
_MISSING = object()
_NO_MATCH = -1


class MetadataIndex:
    """The documents' metadata of a collection's chunks, coded per key on first use."""

    def __init__(self, chunk_ids: IntArray, metadata: list[dict[str, Any]]) -> None:
        self.chunk_ids = chunk_ids
        self._metadata = metadata
        self._codes: dict[str, tuple[IntArray, dict[Any, int]]] = {}
        self._lock = threading.Lock()

    def _coded(self, key: str) -> tuple[IntArray, dict[Any, int]]:
        if key not in self._codes:
            with self._lock:
                table: dict[Any, int] = {}
                codes = np.empty(len(self._metadata), dtype=np.int64)
                for row, record in enumerate(self._metadata):
                    value = record.get(key, _MISSING)
                    if value is _MISSING or isinstance(value, dict | list):
                        codes[row] = _NO_MATCH
                    else:
                        codes[row] = table.setdefault(value, len(table))
                self._codes[key] = (codes, table)
        return self._codes[key]

    def lookup(self, filters: dict[str, list[Scalar]]) -> BoolArray:
        """A table indexed by chunk id: True where the chunk's document matches every filter."""
        size = int(self.chunk_ids.max()) + 1 if len(self.chunk_ids) else 1
        keep = np.ones(len(self.chunk_ids), dtype=bool)
        for key, values in filters.items():
            codes, table = self._coded(key)
            wanted = [table[v] for v in values if v in table]
            keep &= np.isin(codes, np.array(wanted, dtype=np.int64))
        result = np.zeros(size, dtype=bool)
        result[self.chunk_ids[keep]] = True
        return result


def allowed_rows(lookup: BoolArray, ids: IntArray) -> BoolArray:
    """For each chunk id of ``ids``, whether ``lookup`` allows it (ids beyond the table are not allowed)."""
    inside = ids < len(lookup)
    result = np.zeros(len(ids), dtype=bool)
    result[inside] = lookup[ids[inside]]
    return result
