"""One validator for every string and JSON value a user hands m3search, applied before anything is tokenized,
hashed or stored: the HTTP request models, document metadata read from files, and the library's document writes.

Strings: no lone surrogates (they cannot be encoded as UTF-8: the tokenizer, the hash and SQLite would fail on
them) and no NUL characters (C strings end there). JSON values: bounded nesting depth, item count and size, finite
numbers, string keys, so that every stored value can be serialised and read back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from m3search.errors import InputError

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class JsonLimits:
    """Bounds of one JSON value (a document's metadata, a search's filters)."""

    depth: int = 16  # containers inside containers
    items: int = 1_000  # keys and list items, all levels together
    chars: int = 65_536  # characters of all keys and strings, numbers counted as 16
    key_chars: int = 256  # characters of one key


METADATA = JsonLimits()
# A whole request body: any depth beyond this is an attack, not a request (sizes are the body limit's business).
BODY_DEPTH = 32


def check_string(where: str, value: str, max_chars: int | None = None) -> str:
    """``value`` if it holds no lone surrogate, no NUL and at most ``max_chars`` characters, else InputError."""
    if max_chars is not None and len(value) > max_chars:
        raise InputError(f"{where}: {len(value)} characters, more than the limit of {max_chars}")
    bad = _BAD_CHAR.search(value)
    if bad is not None:
        found = "a NUL character" if bad.group() == "\x00" else f"a lone surrogate (U+{ord(bad.group()):04X})"
        raise InputError(f"{where}: holds {found} at character {bad.start()}; send valid Unicode text")
    return value


def check_json(where: str, value: Any, limits: JsonLimits = METADATA) -> Any:
    """``value`` if it is a JSON value within ``limits`` whose strings pass :func:`check_string`, else InputError.

    Iterative (no recursion), so a value nested a million levels deep costs one pass and no stack.
    """
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    items = chars = 0
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= limits.depth:
                raise InputError(f"{path}: nested more than {limits.depth} levels deep")
            items += len(node)
            if items > limits.items:
                raise InputError(f"{where}: more than {limits.items} keys and items in all")
            if isinstance(node, dict):
                for key, child in node.items():
                    if not isinstance(key, str):
                        raise InputError(f"{path}: keys are strings, not {type(key).__name__}")
                    check_string(f"{path or 'body'} key {key[:40]!r}", key, limits.key_chars)
                    chars += len(key)
                    stack.append((_join(path, key), child, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(node))
        elif isinstance(node, str):
            check_string(path, node)
            chars += len(node)
        elif isinstance(node, bool) or node is None:
            chars += 4
        elif isinstance(node, int | float):
            if isinstance(node, float) and not math.isfinite(node):
                raise InputError(f"{path}: {node} is not a JSON number")
            chars += 16
        else:
            raise InputError(f"{path}: a {type(node).__name__} is not a JSON value")
        if chars > limits.chars:
            raise InputError(f"{where}: larger than {limits.chars} characters")
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_tree(where: str, value: Any, max_depth: int = BODY_DEPTH) -> Any:
    """Every string and key anywhere in ``value`` (a parsed request body) passes :func:`check_string`, and nothing
    is nested deeper than ``max_depth``; no size bounds (the request's own limits apply)."""
    stack: list[tuple[str, Any, int]] = [(where, value, 0)]
    while stack:
        path, node, depth = stack.pop()
        if isinstance(node, str):
            check_string(path, node)
        elif isinstance(node, dict | list):
            if depth >= max_depth:
                raise InputError(f"{path or 'body'}: nested more than {max_depth} levels deep")
            if isinstance(node, dict):
                for key, child in node.items():
                    if isinstance(key, str):
                        check_string(f"{path or 'body'} key", key)
                    stack.append((_join(path, key), child, depth + 1))
            else:
                stack.extend((f"{path}[{i}]", child, depth + 1) for i, child in enumerate(node))
    return value
