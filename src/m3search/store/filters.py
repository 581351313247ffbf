"""Metadata filters: ``{"key": value}`` (equality) or ``{"key": [v1, v2]}`` (any of), all keys must match.

Values are JSON scalars (string, number, boolean, null). A value matches a stored scalar equal to it (``true``
equals 1, ``1.0`` equals 1) or a stored list containing it (``{"tags": ["a", "b"]}`` matches ``tags=a``: list
membership); ``null`` matches only a key stored with a null value; objects, and lists inside lists, match nothing.
The SQLite store (this module's SQL), the in-memory index (:mod:`m3search.retrieval.filtering`) and the Qdrant
store (:func:`m3search.store.qdrant.driver.filter_payload`) agree. Filters become parameterised SQL over the
documents' JSON metadata; keys are passed as JSON paths, never spliced into the SQL text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from m3search.errors import InputError

Scalar = str | int | float | bool | None
Filters = Mapping[str, Scalar | Sequence[Scalar]]


def _check_scalar(key: str, value: object) -> None:
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise InputError(f"filter '{key}': values must be strings, numbers, booleans or null, not "
                         f"{type(value).__name__}")


def check_filters(filters: object) -> dict[str, list[Scalar]]:
    """``filters`` normalised to key -> accepted values; :class:`InputError` for anything malformed."""
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise InputError("filters must be an object of metadata key -> value or list of values")
    result: dict[str, list[Scalar]] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not key or '"' in key:
            raise InputError(f"filter keys must be non-empty strings without '\"', not {key!r}")
        values = list(value) if isinstance(value, list | tuple) else [value]
        if not values:
            raise InputError(f"filter '{key}': an empty list matches nothing")
        for item in values:
            _check_scalar(key, item)
        result[key] = values
    return result


def parse_filter(text: str) -> tuple[str, Scalar]:
    """``key=value`` from the command line; the value is read as JSON when it parses (``year=1999``,
    ``draft=false``), else as a string (``lang=en``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"a filter is key=value, not {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    if isinstance(value, list | dict):
        value = raw
    return key.strip(), value


def filter_sql(filters: Mapping[str, list[Scalar]], alias: str = "d") -> tuple[str, list[Any]]:
    """An SQL condition on ``alias.metadata`` (empty string when there are no filters) and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, values in filters.items():
        path = f'$."{key}"'
        parts = []
        for value in values:
            if value is None:
                parts.append(f"(json_type({alias}.metadata, ?) = 'null')")
                params.append(path)
            else:
                scalar = int(value) if isinstance(value, bool) else value
                parts.append(f"(json_extract({alias}.metadata, ?) = ? OR (json_type({alias}.metadata, ?) = 'array' "
                             f"AND EXISTS (SELECT 1 FROM json_each({alias}.metadata, ?) AS j "
                             f"WHERE j.type NOT IN ('object', 'array') AND j.value = ?)))")
                params.extend([path, scalar, path, path, scalar])
        clauses.append("(" + " OR ".join(parts) + ")")
    return " AND ".join(clauses), params
