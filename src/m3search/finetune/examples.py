"""One fine-tuning example and its JSONL row: what ``finetune generate`` writes (``train.jsonl``,
``validation.jsonl``) and ``finetune train`` reads.

A row is ``{"query", "positive", "negatives": [...], "doc_id", "chunk_id", "origin"}``; only ``query`` and
``positive`` are required (a hand-written training file may leave the rest out). Files are written to a temporary
name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3search.errors import InputError


@dataclass(frozen=True)
class Example:
    """One training or validation example: a query, its positive text and hard negatives' texts.

    ``doc_id`` names the positive's document (random negatives are never drawn from it); ``chunk_id`` and
    ``origin`` (title, sentence, keyphrase, llm) say where a generated example came from.
    """

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    doc_id: str = ""
    chunk_id: int | None = None
    origin: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSONL row."""
        return {"query": self.query, "positive": self.positive, "negatives": list(self.negatives),
                "doc_id": self.doc_id, "chunk_id": self.chunk_id, "origin": self.origin}

    @staticmethod
    def parse(line: str, where: str) -> Example:
        """The example of one JSONL row; :class:`InputError` naming ``where`` (file and line) if it is not one.
        Blank negatives are dropped; a ``chunk_id`` that is not an integer or an ``origin`` that is not a string is
        left out (training does not need them)."""
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not a JSON object ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise InputError(f"{where}: not a JSON object")
        query, positive, negatives = row.get("query"), row.get("positive"), row.get("negatives", [])
        if not isinstance(query, str) or not query.strip() or not isinstance(positive, str) or not positive.strip():
            raise InputError(f"{where}: needs non-empty string fields 'query' and 'positive'")
        if not isinstance(negatives, list) or not all(isinstance(n, str) for n in negatives):
            raise InputError(f"{where}: 'negatives' must be a list of strings")
        chunk_id, origin = row.get("chunk_id"), row.get("origin")
        return Example(query, positive, tuple(n for n in negatives if n.strip()), str(row.get("doc_id", "")),
                       chunk_id if isinstance(chunk_id, int) and not isinstance(chunk_id, bool) else None,
                       origin if isinstance(origin, str) else "")


def read_examples(path: Path) -> list[Example]:
    """The examples of a JSONL file; :class:`InputError` naming the file and line of the first bad one, or when
    the file holds fewer than the 2 examples training needs."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise InputError(f"{path} does not exist; create it with 'm3search finetune generate'") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable UTF-8 file ({exc})") from exc
    examples = [Example.parse(line, f"{path}:{n}") for n, line in enumerate(lines, start=1) if line.strip()]
    if len(examples) < 2:
        raise InputError(f"{path} holds {len(examples)} example(s); training needs at least 2")
    return examples


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """``lines`` (each ended by ``\\n``) into ``path`` through a temporary sibling renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")
    os.replace(partial, path)


def jsonl_lines(records: Iterable[dict[str, object]]) -> Iterable[str]:
    """One JSON line per record (UTF-8 kept as is, not escaped)."""
    return (json.dumps(r, ensure_ascii=False) for r in records)


def write_examples(path: Path, examples: Sequence[Example]) -> None:
    """``examples`` as a JSONL file that :func:`read_examples` reads back."""
    write_lines(path, jsonl_lines(e.as_dict() for e in examples))
