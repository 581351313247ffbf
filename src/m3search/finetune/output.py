"""The files of ``finetune generate``: ``train.jsonl``, ``validation.jsonl``, ``validation/`` (a BEIR directory
that ``m3search eval`` reads) and ``report.json``. Each file is written to a temporary name and renamed, so a
reader never sees half a file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from m3search.errors import InputError
from m3search.finetune.pipeline import Example, GeneratedData
from m3search.store.types import Document

TRAIN, VALIDATION, REPORT, BEIR_DIR = "train.jsonl", "validation.jsonl", "report.json", "validation"


def _write(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")
    os.replace(partial, path)


def _jsonl(records: Iterable[dict[str, object]]) -> Iterable[str]:
    return (json.dumps(r, ensure_ascii=False) for r in records)


def write_beir(directory: Path, corpus: Iterable[Document], validation: list[Example]) -> None:
    """The validation split as BEIR: every document, the queries (ids ``v1``, ``v2``, ... in file order) and
    their positives' documents as qrels of score 1."""
    ids = [f"v{n}" for n in range(1, len(validation) + 1)]
    _write(directory / "corpus.jsonl", _jsonl({"_id": d.doc_id, "title": d.title, "text": d.text} for d in corpus))
    _write(directory / "queries.jsonl", _jsonl({"_id": q, "text": e.query} for q, e in zip(ids, validation,
                                                                                          strict=True)))
    _write(directory / "qrels" / "test.tsv", ["query-id\tcorpus-id\tscore",
                                              *(f"{q}\t{e.doc_id}\t1" for q, e in zip(ids, validation, strict=True))])


def write_output(data: GeneratedData, out: Path) -> None:
    """Write every file under ``out`` (created if missing; files of an earlier run are replaced). Without
    validation examples the ``validation/`` directory is not written (a BEIR dataset needs judged queries)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another --out")
    if any("\t" in d.doc_id or "\n" in d.doc_id for d in data.corpus):
        raise InputError("a document id holds a tab or newline, which the BEIR qrels file cannot carry")
    _write(out / TRAIN, _jsonl(e.as_dict() for e in data.train))
    _write(out / VALIDATION, _jsonl(e.as_dict() for e in data.validation))
    if data.validation:
        write_beir(out / BEIR_DIR, data.corpus, data.validation)
    _write(out / REPORT, [json.dumps(data.report.as_dict(), indent=2, ensure_ascii=False)])
