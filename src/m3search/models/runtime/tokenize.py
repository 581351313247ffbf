"""Tokenizers with explicit truncation that reports what it cut.

The Hugging Face ``tokenizers`` object is never mutated after loading (no ``enable_truncation``), so one
instance serves concurrent calls with different max lengths.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from m3search.errors import ConfigError, ModelFormatError


@dataclass(frozen=True)
class Tokens:
    """Token ids of one input as the model sees them, and the input's length before truncation."""

    ids: list[int]
    original_length: int

    @property
    def truncated(self) -> bool:
        return self.original_length > len(self.ids)


@dataclass(frozen=True)
class PairTokens:
    """Token ids and segment ids of one (query, passage) pair, and its content length before truncation."""

    ids: list[int]
    type_ids: list[int]
    original_length: int


class TextTokenizer(Protocol):
    """What encoders need from a tokenizer."""

    pad_id: int
    special_count: int

    def encode(self, texts: Sequence[str], max_length: int) -> list[Tokens]: ...

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character span of each content token of each text (no special tokens): for chunking."""
        ...


class HFTokenizer:
    """A ``tokenizer.json`` loaded with the ``tokenizers`` library."""

    def __init__(self, path: Path, pad_id: int) -> None:
        from tokenizers import Tokenizer, pre_tokenizers

        try:
            self._tok: Any = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise ModelFormatError(f"cannot load tokenizer {path}: {exc}") from exc
        if isinstance(self._tok.pre_tokenizer, pre_tokenizers.Metaspace):
            # SentencePiece models (XLM-R, BGE-M3) were trained with remove_extra_whitespaces: a bare
            # Metaspace turns a trailing space into a stray "▁" token. Splitting on whitespace first matches
            # SentencePiece and the reference implementation (transformers' XLMRobertaTokenizer).
            self._tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.WhitespaceSplit(), self._tok.pre_tokenizer]
            )
        self._tok.no_truncation()
        self._tok.no_padding()
        self.pad_id = pad_id
        self.special_count = int(self._tok.num_special_tokens_to_add(False))

    def encode(self, texts: Sequence[str], max_length: int) -> list[Tokens]:
        """Token ids of ``texts`` cut to ``max_length``; work and memory are bounded by ``max_length``, not by the
        length of a text: a text longer than :func:`window_chars` is tokenized a window at a time, only until
        more than ``max_length`` tokens are seen (its ``original_length`` is then an estimate above the limit)."""
        if max_length <= self.special_count:
            raise ConfigError(f"max_length must exceed the {self.special_count} special tokens")
        window = window_chars(max_length)
        short = [i for i, t in enumerate(texts) if len(t) <= window]
        result: list[Tokens | None] = [None] * len(texts)
        for i, e in zip(short, self._tok.encode_batch([texts[i] for i in short]), strict=True):
            result[i] = _truncate(e.ids, e.special_tokens_mask, max_length)
        for i, text in enumerate(texts):
            if result[i] is None:
                result[i] = self._encode_long(text, max_length, window)
        return [r for r in result if r is not None]

    def _encode_long(self, text: str, max_length: int, window: int) -> Tokens:
        """One text longer than ``window`` characters: windows cut at whitespace (where the pre-tokenizers of
        WordPiece and SentencePiece models split anyway, so the kept ids are those of the whole text) are counted
        until the content budget is exceeded, then only the prefix read so far (less leading windows that held no
        token) is tokenized with special tokens."""
        budget = max_length - self.special_count
        start = end = content = 0
        while end < len(text) and content <= budget:
            stop = _cut(text, end + window)
            found = len(self._tok.encode(text[end:stop], add_special_tokens=False).ids)
            if not found and not content:
                start = stop  # leading windows without a token (whitespace) are not read again
            content += found
            end = stop
        e = self._tok.encode(text[start:end])
        tokens = _truncate(e.ids, e.special_tokens_mask, max_length)
        if end >= len(text):
            return tokens
        estimate = round(content * len(text) / end) + self.special_count  # > max_length: content > budget
        return Tokens(tokens.ids, max(estimate, max_length + 1))

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)  # parallel, in Rust
        return [[(int(a), int(b)) for a, b in e.offsets] for e in encodings]

    def encode_pairs(self, query: str, passages: Sequence[str], max_length: int) -> list[PairTokens]:
        """``[CLS] query [SEP] passage [SEP]`` (the model's own pair template) for each passage.

        The passage is truncated first; the query only when it alone would leave the passage less than half
        of the content budget.
        """
        budget = max_length - int(self._tok.num_special_tokens_to_add(True))
        if budget < 2:
            raise ConfigError(f"max_length {max_length} leaves no room for a query and a passage")
        first = self._tok.encode(query, add_special_tokens=False)
        result = []
        for second in self._tok.encode_batch(list(passages), add_special_tokens=False):
            total = len(first.ids) + len(second.ids)
            q = first
            if total > budget and len(first.ids) > budget // 2:
                q = self._tok.encode(query, add_special_tokens=False)
                q.truncate(max(budget - len(second.ids), budget // 2))
            if len(q.ids) + len(second.ids) > budget:
                second.truncate(budget - len(q.ids))
            pair = self._tok.post_process(q, second, add_special_tokens=True)
            result.append(PairTokens(list(pair.ids), list(pair.type_ids), total))
        return result

    def token_to_id(self, token: str) -> int | None:
        result: int | None = self._tok.token_to_id(token)
        return result

    def decode(self, ids: list[int]) -> str:
        text: str = self._tok.decode(ids, skip_special_tokens=False)
        return text


# Characters per token a text may need before a tokenizer stops reading it (a token of these models spans a few
# characters; 32 leaves room for long words, URLs and runs of whitespace or punctuation).
CHARS_PER_TOKEN = 32
MIN_WINDOW = 16_384


def window_chars(max_length: int) -> int:
    """Characters of one text tokenized at once: texts up to this length are tokenized whole."""
    return max(MIN_WINDOW, max_length * CHARS_PER_TOKEN)


def _cut(text: str, at: int) -> int:
    """A cut point at or after ``at``: just after the next whitespace within 1024 characters (else at ``at``)."""
    if at >= len(text):
        return len(text)
    for index in range(at, min(at + 1024, len(text))):
        if text[index].isspace():
            return index + 1
    return at


def _truncate(ids: list[int], special: list[int], max_length: int) -> Tokens:
    """Cut the content tokens, keeping the leading and trailing special tokens."""
    n = len(ids)
    if n <= max_length:
        return Tokens(ids, n)
    lead = 0
    while lead < n and special[lead]:
        lead += 1
    trail = 0
    while trail < n - lead and special[n - 1 - trail]:
        trail += 1
    keep = max_length - lead - trail
    return Tokens(ids[: lead + keep] + ids[n - trail :], n)


_WORD = re.compile(r"\w+", re.UNICODE)


class HashTokenizer:
    """Lower-cased words mapped to stable 63-bit ids (for the hash encoder); no special tokens."""

    pad_id = 0
    special_count = 0

    def encode(self, texts: Sequence[str], max_length: int) -> list[Tokens]:
        result = []
        for text in texts:
            words = _WORD.finditer(text.lower())  # one word at a time: no list of every word of a huge text
            ids = [_word_id(m.group()) for m in islice(words, max_length)]
            rest = sum(1 for _ in words)
            result.append(Tokens(ids or [_word_id("")], max(len(ids) + rest, 1)))
        return result


    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        return [[match.span() for match in _WORD.finditer(text)] for text in texts]


def _word_id(word: str) -> int:
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1 or 1
