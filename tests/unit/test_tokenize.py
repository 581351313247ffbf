from __future__ import annotations

import tracemalloc

from m3search.models.prepare.cache import PreparedModel
from m3search.models.runtime.tokenize import HashTokenizer, HFTokenizer, _truncate, window_chars


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


def test_a_huge_text_is_tokenized_a_window_at_a_time(tiny_prepared: PreparedModel) -> None:
    """Issue 19 row 1: a 15 MB input cut to 16 tokens was tokenized whole (GBs of offsets); now the tokenizer reads
    only windows until the budget is exceeded, keeps exactly the ids of the whole text, and reports truncation."""
    tok = HFTokenizer(tiny_prepared.tokenizer_path, 0)
    seen: list[int] = []
    real = tok._tok

    class Recording:
        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def encode(self, text: str, *args: object, **kwargs: object) -> object:
            seen.append(len(text))
            return real.encode(text, *args, **kwargs)

        def encode_batch(self, texts: list[str], *args: object, **kwargs: object) -> object:
            seen.extend(len(t) for t in texts)
            return real.encode_batch(texts, *args, **kwargs)

    tok._tok = Recording()
    huge = "cat dog " * 2_000_000
    got = tok.encode([huge, "cat dog"], 16)
    assert max(seen) <= 2 * window_chars(16) + 1024  # never the whole 16 MB
    middle = "cat dog " * 5_000  # longer than a window, short enough to tokenize whole for the reference
    whole = real.encode(middle)
    reference = _truncate(whole.ids, whole.special_tokens_mask, 16)
    assert tok.encode([middle], 16)[0].ids == reference.ids == got[0].ids
    assert got[0].truncated and got[0].original_length > 16 and not got[1].truncated
    spaces = " " * 100_000 + "cat dog"  # a window without a token is not a truncation
    assert tok.encode([spaces], 16)[0].ids == real.encode(spaces).ids and not tok.encode([spaces], 16)[0].truncated


def test_the_hash_tokenizer_counts_a_huge_text_without_a_list_of_its_words() -> None:
    text = "word " * 1_000_000
    tracemalloc.start()
    tokens = HashTokenizer().encode([text], 64)[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(tokens.ids) == 64 and tokens.original_length == 1_000_000
    assert peak < 2 * len(text) + 5_000_000  # the lower-cased copy, not a million word strings (~70 MB)
