"""``finetune generate``: the files' formats, the split by document, determinism, the retrievability filter, hard
negatives, LLM generation on a fake endpoint, the BEIR validation directory, CLI errors and the server job."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m3search.finetune import (
    Example,
    GenerateOptions,
    generate,
    parse_queries,
    read_examples,
    split_documents,
    write_output,
)
from m3search.finetune.queries import Candidate, offline_candidates
from m3search.ingest.pipeline import index_documents
from m3search.models.encoders.loader import load_encoder
from m3search.retrieval.beir import load_dataset
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import SearchRequest
from m3search.store.sqlite import SQLiteStore
from m3search.store.types import Document
from tests.cli import run_cli as _run
from tests.fake_llm import fake_llm
from tests.http import expect_error

DOCS = {
    "wing": ("Swept wings at subsonic speed", "The lift of a swept wing in subsonic flow is measured. Wind tunnel "
             "tests show the tip stall of swept wings at high angles of attack."),
    "heat": ("Heat transfer in hypersonic flow", "Heat transfer to a flat plate in hypersonic flow is computed. The "
             "boundary layer is laminar and the wall is cold."),
    "shock": ("Shock boundary layer interaction", "A shock wave meets a turbulent boundary layer on a compression "
              "ramp. Separation occurs when the ramp angle grows."),
    "jet": ("Jet noise", "The noise of a supersonic jet nozzle is recorded in an anechoic chamber. Screech tones "
            "appear at some pressure ratios."),
    "debian": ("Debian", "Debian is a free operating system. Packages are installed with apt from mirrors all over "
               "the world."),
    "shell": ("Buckling of cylindrical shells", "Thin cylindrical shells under axial compression buckle at loads "
              "far below the classical value because of imperfections."),
    "rotor": ("", "Helicopter rotor blades flap and lag; the blade vortex interaction makes the typical slap noise "
              "heard on descent."),
    "panel": ("Panel flutter", "Supersonic panel flutter of thin skin panels is predicted with piston theory and "
              "checked in a wind tunnel."),
    "inlet": ("Supersonic inlets", "A supersonic inlet slows the air with oblique shocks before a normal shock; "
              "bleed removes the boundary layer."),
    "ice": ("Icing of wings", "Ice accretion on the leading edge of a wing reduces the maximum lift and raises the "
            "drag in cold clouds."),
}
ORIGIN_SET = {"title", "sentence", "keyphrase", "llm"}
KEYS = {"query", "positive", "negatives", "doc_id", "chunk_id", "origin"}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "index.sqlite3"
    with SQLiteStore(path) as store:
        index_documents(store, load_encoder("hash"), "aero", [Document(d, text, "test", title)
                                                              for d, (title, text) in DOCS.items()])
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _generate(db: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    code, stdout, err = _run(["finetune", "generate", "-c", "aero", "--db", str(db), "--out", str(out), "--json",
                              *extra], capsys)
    assert code == 0, err
    report: dict[str, Any] = json.loads(stdout)
    return report


def test_files_formats_report_and_beir_directory(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                 ) -> None:
    out = tmp_path / "data"
    report = _generate(db, out, capsys, "--validation-split", "0.3", "--hard-negatives", "2")
    train, validation = _read(out / "train.jsonl"), _read(out / "validation.jsonl")
    assert train and validation
    texts = {r["doc_id"]: r["positive"] for r in train + validation}
    for record in train + validation:
        assert set(record) == KEYS and record["origin"] in ORIGIN_SET
        assert isinstance(record["chunk_id"], int) and len(record["negatives"]) == 2
        assert record["positive"].endswith(DOCS[record["doc_id"]][1])  # the chunk as indexed: title + text
    assert {r["origin"] for r in train + validation} == {"title", "sentence", "keyphrase"}
    assert not any(r["origin"] == "title" for r in train + validation if r["doc_id"] == "rotor")  # no title
    assert report == json.loads((out / "report.json").read_text())
    kept, generated = report["kept"]["total"], report["generated"]["total"]
    dropped = sum(d["total"] for d in report["dropped"].values())
    assert kept == len(train) + len(validation) and generated == kept + dropped
    assert report["train"]["examples"] == len(train) and report["validation"]["examples"] == len(validation)
    assert report["validation"]["documents"] == 3 and report["documents"] == len(DOCS) == len(texts)
    assert report["parameters"]["hard_negatives"] == 2 and report["m3search_version"]
    dataset = load_dataset(out / "validation")
    assert [q for q in dataset.queries.values()] == [r["query"] for r in validation]
    assert {d.doc_id: (d.title, d.text) for d in dataset.corpus} == DOCS  # every document, text rebuilt
    assert [next(iter(dataset.qrels[q])) for q in dataset.queries] == [r["doc_id"] for r in validation]
    code, stdout, _ = _run(["eval", str(out / "validation"), "-m", "hash", "-s", "bm25", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["queries"] == len(validation)


def test_sentence_positive_rest_leaves_the_sentence_out(db: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    whole = _read_all(tmp_path / "chunk", _generate(db, tmp_path / "chunk", capsys))
    report = _generate(db, tmp_path / "rest", capsys, "--sentence-positive", "rest")
    rest = _read_all(tmp_path / "rest", report)
    assert report["parameters"]["sentence_positive"] == "rest"
    assert [(r["query"], r["origin"], r["negatives"]) for r in rest] == [(r["query"], r["origin"], r["negatives"])
                                                                         for r in whole]  # only positives differ
    sentences = 0
    for before, after in zip(whole, rest, strict=True):
        if before["origin"] != "sentence" or len(before["positive"].split()) - len(before["query"].split()) < 8:
            assert after["positive"] == before["positive"]
            continue
        sentences += 1
        assert before["query"] in " ".join(before["positive"].split()) and before["query"] not in after["positive"]
        words, cut = " ".join(before["positive"].split()).split(), before["query"].split()
        start = next(i for i in range(len(words)) if words[i:i + len(cut)] == cut)
        assert after["positive"].split() == words[:start] + words[start + len(cut):]
    assert sentences > 0
    code, _, err = _run(["finetune", "generate", "-c", "aero", "--db", str(db), "--out", str(tmp_path / "x"),
                         "--sentence-positive", "half"], capsys)
    assert code == 2 and "sentence_positive must be one of chunk, rest" in err and len(err.strip().splitlines()) == 1


def _read_all(out: Path, report: dict[str, Any]) -> list[dict[str, Any]]:
    assert report["kept"]["total"] > 0
    return _read(out / "train.jsonl") + _read(out / "validation.jsonl")


def test_split_by_document_is_deterministic_with_the_seed(db: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    runs = {}
    for name, seed in (("a", "7"), ("b", "7"), *((f"s{s}", str(s)) for s in range(1, 5))):
        _generate(db, tmp_path / name, capsys, "--seed", seed, "--validation-split", "0.3")
        runs[name] = ((tmp_path / name / "train.jsonl").read_text(), (tmp_path / name / "validation.jsonl").read_text())
    assert runs["a"] == runs["b"]
    assert len({v for _, v in runs.values()}) > 1  # other seeds hold out other documents
    for train_text, validation_text in runs.values():
        train = [json.loads(x) for x in train_text.splitlines()]
        validation = [json.loads(x) for x in validation_text.splitlines()]
        assert not {r["doc_id"] for r in train} & {r["doc_id"] for r in validation}
        assert not {r["query"].lower() for r in train} & {r["query"].lower() for r in validation}
    held = split_documents(list("abcdefghij"), 0.1, 3)
    assert len(held) == 1 and held == split_documents(list("jihgfedcba"), 0.1, 3)
    assert split_documents(["a", "b"], 0.0, 0) == set() and len(split_documents(["a", "b"], 0.9, 0)) == 1


def test_filter_drops_a_query_whose_positive_is_not_retrievable(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    def with_a_wrong_one(doc_id: str, title: str, chunks: Any, count: int, seed: int) -> list[Candidate]:
        made = offline_candidates(doc_id, title, chunks, count, seed)
        if doc_id == "wing":  # a query about Debian packages whose positive is the wing document
            made.append(Candidate("debian packages apt mirrors", doc_id, chunks[0].chunk_id, "keyphrase"))
        return list(made)

    options = GenerateOptions(filter_k=1, hard_negatives=0)
    with SQLiteStore(db) as store:
        before = generate(store, load_encoder("hash"), "aero", options)
        monkeypatch.setattr("m3search.finetune.pipeline.offline_candidates", with_a_wrong_one)
        data = generate(store, load_encoder("hash"), "aero", options)
    report = data.report.as_dict()
    assert report["generated"]["total"] == before.report.as_dict()["generated"]["total"] + 1
    assert report["dropped"]["not_retrievable"]["total"] == before.report.as_dict()["dropped"]["not_retrievable"][
        "total"] + 1
    kept = data.train + data.validation
    assert [e.query for e in kept] == [e.query for e in before.train + before.validation]
    assert sum(report["kept_retrieved_by"].values()) == len(kept) and all(not e.negatives for e in kept)


def test_hard_negatives_come_from_other_documents(db: Path) -> None:
    encoder = load_encoder("hash")
    with SQLiteStore(db) as store:
        chunks = {hit.doc_id: hit.text for hit in store.hits([(c, 0.0) for c in range(1, 100)])}
        data = generate(store, encoder, "aero", GenerateOptions(hard_negatives=3, negatives_skip=0,
                                                                validation_split=0.0))
        searcher = Searcher(store, encoder)
        first = data.train[0]
        hits = searcher.search("aero", first.query, SearchRequest("hybrid", k=20)).hits
    assert not data.validation and data.report.validation_documents == 0
    by_text = {text: doc for doc, text in chunks.items()}
    for example in data.train:
        owners = [by_text[n] for n in example.negatives]
        assert len(owners) == 3 == len(set(owners)) and example.doc_id not in owners
    others = list(dict.fromkeys(h.document_id for h in hits if h.document_id != first.doc_id))
    assert [by_text[n] for n in first.negatives] == others[:3]  # the best other documents, in rank order
    with SQLiteStore(db) as store:
        skipped = generate(store, encoder, "aero", GenerateOptions(hard_negatives=1, negatives_skip=2,
                                                                   validation_split=0.0))
    assert [by_text[n] for n in skipped.train[0].negatives] == others[2:3]


def test_generated_files_read_back_as_the_same_examples_training_reads(db: Path, tmp_path: Path) -> None:
    """Generation and training share one Example and one JSONL row: what generate writes, read_examples (the
    training side's reader) gives back field for field, provenance (chunk, origin) included."""
    with SQLiteStore(db) as store:
        data = generate(store, load_encoder("hash"), "aero", GenerateOptions(hard_negatives=2, validation_split=0.3))
    write_output(data, tmp_path / "data")
    assert len(data.train) >= 2 and all(isinstance(e, Example) and e.chunk_id is not None for e in data.train)
    assert read_examples(tmp_path / "data" / "train.jsonl") == data.train
    assert read_examples(tmp_path / "data" / "validation.jsonl") == data.validation


def _llm_reply(messages: list[dict[str, str]]) -> str:
    passage = messages[-1]["content"].split("Passage:\n", 1)[1]
    if "Debian" in passage:
        return "I cannot help with that."  # one line: a single query, not the asked-for number
    words = [w.strip(".,;").lower() for w in passage.split() if len(w) > 5]
    return "```json\n" + json.dumps([" ".join(words[:3]), " ".join(words[3:6])]) + "\n```"


def test_llm_generation_counts_failures_and_an_unreachable_endpoint_exits_2(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with fake_llm(_llm_reply) as llm:
        report = _generate(db, tmp_path / "llm", capsys, "--llm", llm.url, "--llm-model", "tiny-chat",
                           "--queries-per-doc", "2")
    assert {r["body"]["model"] for r in llm.requests} == {"tiny-chat"} and len(llm.requests) == len(DOCS)
    assert report["generated"] == {"total": 20, "llm": 20}
    assert report["dropped"]["llm_failure"] == {"total": 1, "llm": 1}  # Debian's reply: one query of two
    records = _read(tmp_path / "llm" / "train.jsonl") + _read(tmp_path / "llm" / "validation.jsonl")
    assert {r["origin"] for r in records} == {"llm"} and "i cannot help with that." not in {r["query"] for r in
                                                                                           records}
    assert report["parameters"]["llm"] == {"url": llm.url, "model": "tiny-chat"}
    with fake_llm(_llm_reply, status=503) as down:
        code, _, err = _run(["finetune", "generate", "-c", "aero", "--db", str(db), "--out", str(tmp_path / "x"),
                             "--llm", down.url, "--llm-model", "m"], capsys)
    assert code == 2 and "HTTP 503" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_parse_queries_takes_json_lists_objects_and_lines() -> None:
    assert parse_queries('["a b", "c d", 3]', 5) == ["a b", "c d"]
    assert parse_queries('{"queries": ["x y"]}', 5) == ["x y"]
    assert parse_queries("1. first query\n2) 'second one'\n- third\n\n", 2) == ["first query", "second one"]
    assert parse_queries("", 3) == []


def test_cli_errors_are_one_line(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["finetune", "generate", "--db", str(db), "--out", str(tmp_path / "o")]
    for args, message in (([*base, "-c", "nope"], "no collection named 'nope'"),
                          ([*base, "-c", "aero", "--validation-split", "1.5"], "--validation-split must be"),
                          ([*base, "-c", "aero", "--negatives-from", "bm25"], "--negatives-from must be"),
                          ([*base, "-c", "aero", "--llm-model", "m"], "--llm-model needs --llm")):
        code, _, err = _run(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    code, out, _ = _run([*base, "-c", "aero"], capsys)
    assert code == 0 and "kept" in out and "validation" in out


def test_server_generates_in_the_background(make_client: Callable[..., TestClient], isolated_home: Path) -> None:
    client = make_client()
    assert client.put("/api/v1/embedding-configs/fake", json={"id": "fake", "model": "hash"}).status_code in (200,
                                                                                                            201)
    assert client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "fake"}
                       ).status_code == 201
    documents = [{"id": d, "title": title, "text": text} for d, (title, text) in DOCS.items()]
    assert client.post("/api/v1/collections/kb/documents", json={"documents": documents}).status_code == 200
    started = client.post("/api/v1/fine-tuning/generate", json={"collection": "kb", "validation_split": 0.2,
                                                                "hard_negatives": 1, "seed": 3})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    deadline = time.monotonic() + 30
    while (body := client.get(f"/api/v1/fine-tuning/jobs/{job_id}").json())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["state"] == "done" and body["error"] is None, body
    directory = isolated_home / "finetune" / job_id
    assert body["output_dir"] == str(directory) and body["report"]["collection"] == "kb"
    assert body["processed"] == body["total"] == body["report"]["generated"]["total"] - sum(
        d["total"] for r, d in body["report"]["dropped"].items() if r in ("duplicate", "too_short"))
    assert len(_read(directory / "train.jsonl")) == body["report"]["train"]["examples"]
    assert load_dataset(directory / "validation").queries
    expect_error(client.post("/api/v1/fine-tuning/generate", json={"collection": "nope"}), 404,
                 "collection_not_found")
    expect_error(client.post("/api/v1/fine-tuning/generate", json={"collection": "kb", "validation_split": 1}), 400)
    expect_error(client.post("/api/v1/fine-tuning/generate", json={"collection": "kb", "llm": {"url": "ftp://x",
                                                                                                "model": "m"}}), 400)
    expect_error(client.get(f"/api/v1/fine-tuning/jobs/{'0' * 32}"), 404)
    expect_error(client.get("/api/v1/fine-tuning/jobs/not-a-job"), 400)
    assert sorted(p.name for p in (isolated_home / "finetune").iterdir()) == [job_id]


def test_server_job_fails_with_the_llm_error_and_writes_nothing(make_client: Callable[..., TestClient],
                                                                isolated_home: Path) -> None:
    with fake_llm(_llm_reply, status=503) as down:
        client = make_client(llm_url=down.url, llm_model="m")
        client.put("/api/v1/embedding-configs/fake", json={"id": "fake", "model": "hash"})
        client.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "fake"})
        documents = [{"id": d, "title": title, "text": text} for d, (title, text) in DOCS.items()]
        assert client.post("/api/v1/collections/kb/documents", json={"documents": documents}).status_code == 200
        refused = client.post("/api/v1/fine-tuning/generate",
                              json={"collection": "kb", "llm": {"url": "http://169.254.169.254/v1", "model": "m"}})
        assert refused.status_code == 400 and "llm.url" in refused.text  # a client cannot name the URL the server calls
        started = client.post("/api/v1/fine-tuning/generate", json={"collection": "kb", "llm": {}})
        assert started.status_code == 202, started.text
        assert {r["body"]["model"] for r in down.requests} <= {"m"}
        deadline = time.monotonic() + 30
        while (body := client.get(f"/api/v1/fine-tuning/jobs/{started.json()['id']}").json())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert body["state"] == "failed" and "HTTP 503" in body["error"] and body["report"] is None
    assert list((isolated_home / "finetune" / body["id"]).iterdir()) == []
    unconfigured = make_client().post("/api/v1/fine-tuning/generate", json={"collection": "kb", "llm": {}})
    assert unconfigured.status_code == 400 and "M3SEARCH_LLM_URL" in unconfigured.json()["error"]["message"]
