"""The one validator of user strings and JSON values (m3search.validation): what passes, what is refused and how the
refusal names the place."""

from __future__ import annotations

import pytest

from m3search.errors import InputError
from m3search.validation import JsonLimits, check_json, check_string, check_tree


def test_strings_with_lone_surrogates_or_nul_are_refused_by_place() -> None:
    assert check_string("q", "ünïcödé 💥 \U0010ffff") == "ünïcödé 💥 \U0010ffff"  # paired surrogates are fine
    with pytest.raises(InputError, match=r"q: holds a lone surrogate \(U\+D800\) at character 2"):
        check_string("q", "ab\ud800")
    with pytest.raises(InputError, match="title: holds a NUL character at character 1"):
        check_string("title", "a\x00b")
    with pytest.raises(InputError, match="more than the limit of 3"):
        check_string("id", "abcd", max_chars=3)


def test_json_values_are_bounded_in_depth_items_and_size() -> None:
    limits = JsonLimits(depth=3, items=10, chars=100, key_chars=8)
    assert check_json("m", {"a": [1, 2.5, None, True, {"b": "c"}]}, limits)
    for value, says in [({"a": {"b": {"c": {}}}}, "m.a.b.c: nested more than 3"),
                        ({"a": list(range(11))}, "more than 10 keys and items"),
                        ({"a": "x" * 101}, "larger than 100 characters"),
                        ({"k" * 9: 1}, "more than the limit of 8"),
                        ({"a": float("nan")}, "m.a: nan is not a JSON number"),
                        ({"a": ["ok", "\udfff"]}, r"m.a\[1\]: holds a lone surrogate"),
                        ({"a": {1, 2}}, "a set is not a JSON value")]:
        with pytest.raises(InputError, match=says):
            check_json("m", value, limits)


def test_a_body_nested_100k_levels_costs_one_pass_and_no_recursion() -> None:
    deep: object = "leaf"
    for _ in range(100_000):  # far beyond Python's recursion limit
        deep = [deep]
    with pytest.raises(InputError, match=r"\[0\]: nested more than 32 levels deep"):
        check_tree("", deep)
    assert check_tree("", {"input": ["a", "b"], "k": {"x": [1, {"y": "z"}]}})
    with pytest.raises(InputError, match=r"documents\[0\].metadata key: holds a lone surrogate"):
        check_tree("", {"documents": [{"metadata": {"\ud800": 1}}]})
