from __future__ import annotations

from m3search.models.prepare import PreparedModel
from m3search.models.tokenize import HFTokenizer, _truncate


def test_truncation_keeps_leading_and_trailing_special_tokens() -> None:
    ids, special = [101, 5, 6, 7, 8, 102], [1, 0, 0, 0, 0, 1]
    tokens = _truncate(ids, special, 4)
    assert tokens.ids == [101, 5, 6, 102] and tokens.original_length == 6 and tokens.truncated
    assert not _truncate(ids, special, 6).truncated


def test_tokenizer_is_not_mutated_by_calls(tiny_prepared: PreparedModel) -> None:
    tok = HFTokenizer(tiny_prepared.tokenizer_path, 0)
    long_text = "cat " * 30
    assert len(tok.encode([long_text], 5)[0].ids) == 5
    assert len(tok.encode([long_text], 16)[0].ids) == 16
    assert tok.encode([long_text], 16)[0].original_length == 32
    assert tok.special_count == 2
