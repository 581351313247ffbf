"""Metadata filters evaluated in memory: each filtered key becomes an integer code per chunk, so a filter is one
``np.isin`` over codes instead of a JSON scan in SQL per query.

Matching is the SQL filter's (:mod:`m3search.store.filters`): equality of JSON scalars, where ``true`` equals 1 and
``1.0`` equals 1, or membership in a stored list of scalars; ``null`` matches only a key present with a null value,
and objects match nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from m3search.lazy import LazyMap
from m3search.store.filters import Scalar
from m3search.types import IntArray

BoolArray = npt.NDArray[np.bool_]
_MISSING = object()
_NO_MATCH = -1
# per row the code of a scalar value (or _NO_MATCH), the code table, and (row, code) pairs of list elements
_Coded = tuple["IntArray", dict[Any, int], "IntArray", "IntArray"]


class MetadataIndex:
    """The documents' metadata of a collection's chunks, coded per key on first use."""

    def __init__(self, chunk_ids: IntArray, metadata: list[dict[str, Any]]) -> None:
        self.chunk_ids = chunk_ids
        self._metadata = metadata
        self._codes = LazyMap(self._coded)

    def _coded(self, key: str) -> _Coded:
        """Per row, the code of the key's scalar value; and for rows holding a list, (row, code) of each scalar in
        it (null elements left out: null matches a null value only)."""
        table: dict[Any, int] = {}
        codes = np.full(len(self._metadata), _NO_MATCH, dtype=np.int64)
        list_rows: list[int] = []
        list_codes: list[int] = []
        for row, record in enumerate(self._metadata):
            value = record.get(key, _MISSING)
            if isinstance(value, list):
                for item in value:
                    if item is not None and not isinstance(item, dict | list):
                        list_rows.append(row)
                        list_codes.append(table.setdefault(item, len(table)))
            elif value is not _MISSING and not isinstance(value, dict):
                codes[row] = table.setdefault(value, len(table))
        return codes, table, np.array(list_rows, dtype=np.int64), np.array(list_codes, dtype=np.int64)

    def lookup(self, filters: dict[str, list[Scalar]]) -> BoolArray:
        """A table indexed by chunk id: True where the chunk's document matches every filter."""
        size = int(self.chunk_ids.max()) + 1 if len(self.chunk_ids) else 1
        keep = np.ones(len(self.chunk_ids), dtype=bool)
        for key, values in filters.items():
            codes, table, list_rows, list_codes = self._codes.get(key)
            wanted = np.array([table[v] for v in values if v in table], dtype=np.int64)
            match = np.isin(codes, wanted)
            match[list_rows[np.isin(list_codes, wanted)]] = True
            keep &= match
        result = np.zeros(size, dtype=bool)
        result[self.chunk_ids[keep]] = True
        return result


def allowed_rows(lookup: BoolArray, ids: IntArray) -> BoolArray:
    """For each chunk id of ``ids``, whether ``lookup`` allows it (ids beyond the table are not allowed)."""
    inside = ids < len(lookup)
    result = np.zeros(len(ids), dtype=bool)
    result[inside] = lookup[ids[inside]]
    return result
