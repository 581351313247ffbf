"""Token-aware chunking: windows of the model's own tokens, with overlap, cut at token boundaries."""

from __future__ import annotations

from collections.abc import Sequence

from m3search.errors import ConfigError
from m3search.models.runtime.tokenize import TextTokenizer
from m3search.store.types import Chunk


def chunk_text(text: str, tokenizer: TextTokenizer, chunk_tokens: int, overlap: int) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``chunk_tokens`` tokens (special tokens included) that overlap."""
    return chunk_texts([text], tokenizer, chunk_tokens, overlap)[0]


def chunk_texts(texts: Sequence[str], tokenizer: TextTokenizer, chunk_tokens: int, overlap: int) -> list[list[Chunk]]:
    """Split each text into chunks of at most ``chunk_tokens`` tokens (special tokens included) that overlap.

    Each chunk keeps its character span in its text; a text that fits is one chunk (its whole text). The texts
    are tokenized in one call (in parallel).

    Raises:
        ConfigError: the sizes leave no room for content or the overlap is not smaller than the chunk.
    """
    content = chunk_tokens - tokenizer.special_count
    if content < 1 or not 0 <= overlap < content:
        raise ConfigError(f"chunk size {chunk_tokens} and overlap {overlap} leave no room for content tokens")
    return [_split(text, spans, content, overlap, tokenizer.special_count)
            for text, spans in zip(texts, tokenizer.offsets(texts), strict=True)]


def _split(text: str, spans: list[tuple[int, int]], content: int, overlap: int, special: int) -> list[Chunk]:
    if len(spans) <= content:
        return [Chunk(0, text, 0, len(text), len(spans) + special)]
    chunks: list[Chunk] = []
    start = 0
    while True:
        stop = _word_end(spans, start, min(start + content, len(spans)))
        begin, end = spans[start][0], spans[stop - 1][1]
        chunks.append(Chunk(len(chunks), text[begin:end], begin, end, stop - start + special))
        if stop == len(spans):
            return chunks
        start = _word_start(spans, chunks[-1], max(start + 1, stop - overlap))


def _joined(spans: list[tuple[int, int]], index: int) -> bool:
    """Whether token ``index`` continues the previous one's word (no space between: a subword piece)."""
    return 0 < index < len(spans) and spans[index][0] == spans[index - 1][1]


def _word_end(spans: list[tuple[int, int]], start: int, stop: int) -> int:
    """Move a chunk's end back so it does not split a word (unless the word fills the chunk)."""
    end = stop
    while end > start + 1 and _joined(spans, end):
        end -= 1
    return end if end > start + 1 or not _joined(spans, stop) else stop


def _word_start(spans: list[tuple[int, int]], previous: Chunk, start: int) -> int:
    """Move the next chunk's start back to the beginning of its word (not before the previous chunk's start)."""
    while _joined(spans, start) and spans[start - 1][0] > previous.start:
        start -= 1
    return start
