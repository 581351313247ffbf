"""The evaluation harness: metrics against hand-computed values, BEIR loading errors, the eval and search CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from m3search.errors import InputError
from m3search.retrieval.beir import load_dataset, read_run, write_run
from m3search.retrieval.evaluation import evaluate_run
from tests.cli import run_cli as _run

DOCS = {
    "wing": "lift of a swept wing in subsonic flow",
    "heat": "heat transfer to a flat plate in hypersonic flow",
    "shock": "shock wave and boundary layer interaction",
    "jet": "noise of a supersonic jet nozzle",
    "debian": "debian is a free operating system",
}
QUERIES = {"q1": "swept wing lift", "q2": "hypersonic heat transfer plate", "q3": "jet noise"}
QRELS = [("q1", "wing", 2), ("q2", "heat", 1), ("q2", "shock", 1), ("q3", "jet", 1)]


def _write_beir(folder: Path, queries: dict[str, str] = QUERIES) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t, "metadata": {"topic": "aero" if d != "debian" else
                                                                                 "os"}}) + "\n"
                for d, t in DOCS.items()), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()),
                                          encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                               "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    return folder


def test_metrics_equal_hand_computed_values() -> None:
    qrels = {"a": {"d1": 2, "d2": 1}, "b": {"d3": 1}, "c": {"d9": 1}}
    run = {"a": {"d2": 0.9, "x": 0.8, "d1": 0.7}, "b": {"y": 0.5, "z": 0.4, "d3": 0.3}, "c": {}}
    means, per_query = evaluate_run(run, qrels, k=2)
    ideal_a = 2 + 1 / math.log2(3)
    assert per_query["a"]["ndcg@2"] == pytest.approx(1 / ideal_a)  # d2 (gain 1) at rank 1, d1 beyond the cutoff
    assert per_query["a"]["mrr@2"] == 1.0 and per_query["b"]["mrr@2"] == 0.0  # d3 is at rank 3 > 2
    assert per_query["a"]["map"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert per_query["b"]["recall@100"] == 1.0
    assert per_query["c"] == {"ndcg@2": 0.0, "mrr@2": 0.0, "recall@100": 0.0, "map": 0.0}  # counted, not dropped
    assert means["mrr@2"] == pytest.approx(1 / 3)


def test_ties_follow_trec_eval_order() -> None:
    qrels = {"a": {"d1": 1}}
    # equal scores: trec_eval ranks the larger document id first, so d2 comes before d1
    means, _ = evaluate_run({"a": {"d1": 1.0, "d2": 1.0}}, qrels, k=1)
    assert means["mrr@1"] == 0.0


def test_run_files_round_trip(tmp_path: Path) -> None:
    run = {"q1": {"a": 0.5, "b": 0.25}, "q2": {"c": 1.0}}
    write_run(tmp_path / "run.trec", run, "test")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert lines[0] == "q1 Q0 a 1 0.5 test" and lines[1] == "q1 Q0 b 2 0.25 test"
    assert read_run(tmp_path / "run.trec") == run


def test_bad_datasets_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a directory"):
        load_dataset(tmp_path / "missing")
    folder = _write_beir(tmp_path / "ds")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\nnot json\n')
    with pytest.raises(InputError, match=r"queries\.jsonl:2: invalid JSON"):
        load_dataset(folder)
    (folder / "queries.jsonl").write_text('{"_id": "zz", "text": "x"}\n')
    with pytest.raises(InputError, match="no query"):
        load_dataset(folder)


def test_eval_cli_prints_json_plots_and_saves_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write_beir(tmp_path / "tiny")
    args = ["eval", str(folder), "-m", "hash", "-s", "bm25,dense,hybrid", "--json", "--plot", str(tmp_path / "p.png"),
            "--save-run", str(tmp_path / "runs" / "run.trec")]
    code, out, _ = _run(args, capsys)
    assert code == 0
    report = json.loads(out)
    assert [s["strategy"] for s in report["strategies"]] == ["bm25", "dense", "hybrid"]
    bm25 = report["strategies"][0]
    assert bm25["mrr@10"] == 1.0 and report["queries"] == 3 and report["documents"] == 5
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    saved = read_run(tmp_path / "runs" / "run.bm25.trec")
    assert next(iter(saved["q1"])) == "wing"
    other = _write_beir(tmp_path / "other", {"q1": "debian free system"})
    code, out, _ = _run(["eval", str(folder), "-m", "hash", "-s", "bm25", "--json", "--queries",
                         str(other / "queries.jsonl")], capsys)
    assert code == 0 and json.loads(out)["queries"] == 1 and json.loads(out)["strategies"][0]["mrr@10"] == 0.0


def test_eval_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in ((["eval", str(tmp_path / "nope"), "-m", "hash"], "not a directory"),
                          (["eval", str(_write_beir(tmp_path / "d")), "-m", "hash", "-s", "bm25,magic"],
                           "unknown strategy 'magic'")):
        code, _, err = _run(args, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_search_cli_strategies_filters_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _write_beir(tmp_path / "tiny")
    db = str(tmp_path / "i.sqlite3")
    assert _run(["index", str(folder / "corpus.jsonl"), "-c", "aero", "-m", "hash", "--db", db], capsys)[0] == 0
    code, out, _ = _run(["search", "hypersonic heat", "-c", "aero", "--db", db, "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and result["strategy"] == "hybrid" and result["retrievers"] == ["dense", "bm25"]
    top = result["hits"][0]
    assert top["document_id"] == "heat" and set(top["breakdown"]) == {"dense", "bm25"}
    code, out, _ = _run(["search", "free system", "-c", "aero", "--db", db, "--json", "-s", "bm25",
                         "--filter", "topic=aero"], capsys)
    assert code == 0 and "debian" not in {h["document_id"] for h in json.loads(out)["hits"]}
    code, out, _ = _run(["search", "jet", "-c", "aero", "--db", db, "-s", "weighted", "--weights", "dense=1"], capsys)
    assert code == 0 and "weighted over dense, bm25" in out and "jet" in out
    for args, message in ((["-s", "two_stage", "--coarse-dim", "64"], "not, and truncating"),
                          (["-s", "sparse"], "needs sparse vectors"),
                          (["--weights", "dense=x"], "--weights is name=number"),
                          (["--filter", "oops"], "key=value")):
        code, _, err = _run(["search", "jet", "-c", "aero", "--db", db, *args], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
