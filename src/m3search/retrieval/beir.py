"""BEIR-format datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``; and TREC run files.

Every problem in the files is an :class:`InputError` naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from m3search.errors import InputError
from m3search.retrieval.fusion import ranked
from m3search.store.types import Document

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Dataset:
    """A retrieval test collection."""

    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: Qrels


def _jsonl(path: Path) -> list[tuple[int, dict[str, object]]]:
    if not path.is_file():
        raise InputError(f"{path} is missing (a BEIR dataset has corpus.jsonl, queries.jsonl and qrels/test.tsv)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: invalid JSON ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("_id"), str | int):
            raise InputError(f"{path}:{number}: expected an object with '_id'")
        records.append((number, record))
    return records


def read_queries(path: Path) -> dict[str, str]:
    """Query id -> text from a BEIR ``queries.jsonl``."""
    queries: dict[str, str] = {}
    for number, record in _jsonl(path):
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{path}:{number}: query has no text")
        queries[str(record["_id"])] = text
    return queries


def read_corpus(path: Path) -> list[Document]:
    docs = []
    for number, record in _jsonl(path):
        text, title = record.get("text"), record.get("title") or ""
        if not isinstance(text, str) or not isinstance(title, str) or not (text.strip() or title.strip()):
            raise InputError(f"{path}:{number}: document has no text")
        metadata = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
        docs.append(Document(str(record["_id"]), text, path.name, title, metadata))  # type: ignore[arg-type]
    return docs


def read_qrels(path: Path) -> Qrels:
    """Query id -> document id -> relevance (> 0 only) from a TSV with a header line."""
    if not path.is_file():
        raise InputError(f"{path} is missing")
    qrels: Qrels = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t") if "\t" in line else line.split()
        if number == 1 and parts and not parts[-1].lstrip("-").isdigit():
            continue  # the header
        if not line.strip():
            continue
        if len(parts) != 3 or not parts[2].strip().lstrip("-").isdigit():
            raise InputError(f"{path}:{number}: expected 'query-id corpus-id score'")
        if int(parts[2]) > 0:
            qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = int(parts[2])
    return qrels


def load_dataset(directory: Path, *, queries: Path | None = None, split: str = "test") -> Dataset:
    """A BEIR directory; ``queries`` replaces its queries (cross-lingual runs: other-language queries with the
    same ids). Queries without judgements are dropped, as trec_eval would ignore them."""
    if not directory.is_dir():
        raise InputError(f"{directory} is not a directory")
    corpus = read_corpus(directory / "corpus.jsonl")
    texts = read_queries(queries or directory / "queries.jsonl")
    qrels = read_qrels(directory / "qrels" / f"{split}.tsv")
    judged = {q: t for q, t in texts.items() if q in qrels}
    if not judged:
        raise InputError(f"no query of {queries or directory / 'queries.jsonl'} has judgements in the qrels")
    return Dataset(directory.name, corpus, judged, qrels)


def write_run(path: Path, run: Mapping[str, Mapping[str, float]], tag: str) -> None:
    """A TREC run file: ``qid Q0 docid rank score tag``, ranks from 1 in score order."""
    lines: list[str] = []
    for qid in sorted(run):
        lines.extend(f"{qid} Q0 {doc} {rank} {score:.10g} {tag}"
                     for rank, (doc, score) in enumerate(ranked(run[qid]), 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_run(path: Path) -> Run:
    run: Run = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if len(parts) != 6:
            raise InputError(f"{path}:{number}: expected 'qid Q0 docid rank score tag'")
        run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
    return run
