"""Build the evaluation data under benchmarks/data from ../shared/data (run once; the output is committed).

- cranfield/: the Cranfield collection in BEIR format. Documents: ``.W`` (which repeats the title). Queries are
  numbered by their position 1..225 in cran.qry (the qrels use positions, not the ``.I`` numbers). Relevance:
  gain = 5 - grade for grades 1..4; the ``-1`` rows are dropped. Documents 471 and 995 are empty in the source
  and left out.
- debian-faq/<lang>/: copied as is (BEIR format already).

    python benchmarks/data/make_data.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
LANGUAGES = ("en", "de", "fr")


def _records(text: str) -> list[dict[str, str]]:
    """SMART records. The text field runs from ``.W`` to the next ``.I``: a few abstracts (e.g. 240) hold stray
    ``.A``/``.B`` lines inside their text, which are dropped, not taken as the end of the text."""
    records = []
    for block in re.split(r"^\.I (?=\d)", text.replace("\r\n", "\n"), flags=re.M)[1:]:
        head, _, body = block.partition("\n.W\n")
        fields = {"id": head.split("\n", 1)[0].strip()}
        title = re.search(r"^\.T\n(.*?)(?=^\.[AB]\n|\Z)", head, flags=re.M | re.S)
        fields["T"] = " ".join(title.group(1).split()) if title else ""
        fields["W"] = " ".join(line for line in body.split("\n") if line.strip() not in (".A", ".B", ".T"))
        fields["W"] = " ".join(fields["W"].split())
        records.append(fields)
    return records


def cranfield(source: Path, target: Path) -> None:
    docs = _records((source / "cran.all.1400").read_text(encoding="latin-1"))
    queries = _records((source / "cran.qry").read_text(encoding="latin-1"))
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    with (target / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for doc in docs:
            text = doc.get("W") or doc.get("T", "")
            if not text:
                continue  # 471 and 995 are empty in the source (one judgement, 125/995, can never be met)
            out.write(json.dumps({"_id": doc["id"], "title": "", "text": text}) + "\n")
    with (target / "queries.jsonl").open("w", encoding="utf-8") as out:
        for position, query in enumerate(queries, start=1):  # the qrels' query ids are positions
            out.write(json.dumps({"_id": str(position), "text": query["W"]}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"]
    for line in (source / "cranqrel").read_text().splitlines():
        qid, docid, grade = line.split()[:3]
        if 1 <= int(grade) <= 4:
            rows.append(f"{qid}\t{docid}\t{5 - int(grade)}")
    (target / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    kept = sum(1 for d in docs if d.get("W") or d.get("T"))
    print(f"cranfield: {kept} documents, {len(queries)} queries, {len(rows) - 1} judgements")


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent.parent / "shared" / "data"
    cranfield(shared / "cranfield", HERE / "cranfield")
    for lang in LANGUAGES:
        shutil.copytree(shared / "debian-faq" / lang, HERE / "debian-faq" / lang, dirs_exist_ok=True)
    print(f"debian-faq: {', '.join(LANGUAGES)}")


if __name__ == "__main__":
    main()
