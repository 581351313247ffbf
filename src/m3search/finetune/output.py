"""The files of ``finetune generate``: ``train.jsonl``, ``validation.jsonl`` (rows of
:class:`~m3search.finetune.examples.Example`), ``validation/`` (a BEIR directory that ``m3search eval`` reads) and
``report.json``. Each file is written to a temporary name and renamed, so a reader never sees half a file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from m3search.errors import InputError
from m3search.finetune.examples import Example, jsonl_lines, write_examples, write_lines
from m3search.finetune.pipeline import GeneratedData
from m3search.store.types import Document

TRAIN, VALIDATION, REPORT, BEIR_DIR = "train.jsonl", "validation.jsonl", "report.json", "validation"


def write_beir(directory: Path, corpus: Iterable[Document], validation: list[Example]) -> None:
    """The validation split as BEIR: every document, the queries (ids ``v1``, ``v2``, ... in file order) and
    their positives' documents as qrels of score 1."""
    ids = [f"v{n}" for n in range(1, len(validation) + 1)]
    write_lines(directory / "corpus.jsonl",
                jsonl_lines({"_id": d.doc_id, "title": d.title, "text": d.text} for d in corpus))
    write_lines(directory / "queries.jsonl",
                jsonl_lines({"_id": q, "text": e.query} for q, e in zip(ids, validation, strict=True)))
    write_lines(directory / "qrels" / "test.tsv",
                ["query-id\tcorpus-id\tscore", *(f"{q}\t{e.doc_id}\t1" for q, e in zip(ids, validation, strict=True))])


def write_output(data: GeneratedData, out: Path) -> None:
    """Write every file under ``out`` (created if missing; files of an earlier run are replaced). Without
    validation examples the ``validation/`` directory is not written (a BEIR dataset needs judged queries)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another --out")
    if any("\t" in d.doc_id or "\n" in d.doc_id for d in data.corpus):
        raise InputError("a document id holds a tab or newline, which the BEIR qrels file cannot carry")
    write_examples(out / TRAIN, data.train)
    write_examples(out / VALIDATION, data.validation)
    if data.validation:
        write_beir(out / BEIR_DIR, data.corpus, data.validation)
    write_lines(out / REPORT, [json.dumps(data.report.as_dict(), indent=2, ensure_ascii=False)])
