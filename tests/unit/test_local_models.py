"""Local models (fine-tuned copies under a new name): registration, derived facts, lookup, listing, errors; and the
input checks of ``finetune train`` (no training here: that is in tests/slow/test_finetune.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from m3search.errors import ConfigError, InputError, ModelFormatError, UnknownModelError
from m3search.finetune import Example, TrainParams, read_examples, training_columns
from m3search.models.local import all_specs, local_models, lookup_spec, register_local, remove_local
from m3search.models.registry import get_spec, list_specs
from m3search.models.resolve import pull, resolve_model
from m3search.settings import get_settings
from tests.cli import run_cli as run


def model_dir(path: Path, hidden: int = 384) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"hidden_size": hidden}))
    for name in ("tokenizer.json", "model.safetensors"):
        (path / name).write_text("{}")
    return path


def test_derived_spec_keeps_the_base_facts_under_a_new_name(tmp_path: Path) -> None:
    base = get_spec("mxbai-embed-large-v1")
    register_local("My-MXBAI-FT", base.name, model_dir(tmp_path / "ft", hidden=1024), description="tuned")
    spec = lookup_spec("my-mxbai-ft")
    assert lookup_spec("MY-mxbai-ft ") == spec
    assert (spec.name, spec.base, spec.hf_repo, spec.revision) == ("my-mxbai-ft", base.name, "", "")
    same = ("pooling", "normalize", "query_prefix", "doc_prefix", "max_tokens", "family", "outputs", "dim")
    assert {f: getattr(spec, f) for f in same} == {f: getattr(base, f) for f in same}
    assert spec.mrl_dims == () and base.mrl_dims  # fine-tuning does not keep the Matryoshka training
    assert spec.description == "tuned" and spec.needs_weights
    with pytest.raises(ConfigError, match="has no hub repository"):
        dataclasses.replace(spec, hf_repo="someone/else")


def test_dimension_comes_from_the_files(tmp_path: Path) -> None:
    register_local("small-ft", "all-minilm-l6-v2", model_dir(tmp_path / "ft", hidden=32))
    assert lookup_spec("small-ft").dim == 32


def test_lookup_and_listing(tmp_path: Path) -> None:
    assert lookup_spec("BAAI/bge-m3") == get_spec("bge-m3")  # the registry first, repo ids included
    assert all_specs() == list_specs()
    register_local("b-ft", "all-minilm-l6-v2", model_dir(tmp_path / "b"))
    register_local("a-ft", "all-minilm-l6-v2", model_dir(tmp_path / "a"))
    assert [s.name for s in all_specs()] == [s.name for s in list_specs()] + ["a-ft", "b-ft"]
    with pytest.raises(UnknownModelError, match="a-ft, b-ft"):
        lookup_spec("c-ft")


def test_registry_names_and_bad_names_are_refused(tmp_path: Path) -> None:
    good = model_dir(tmp_path / "ft")
    for name in ("all-minilm-l6-v2", "BGE-M3", "hash"):
        with pytest.raises(ConfigError, match="is the registry model"):
            register_local(name, "all-minilm-l6-v2", good)
    for name in ("../../etc", "a/b", "", "-x", "x" * 81):
        with pytest.raises(ConfigError, match="cannot name a local model"):
            register_local(name, "all-minilm-l6-v2", good)
    assert local_models() == {}


def test_bases_that_cannot_be_fine_tuned(tmp_path: Path) -> None:
    good = model_dir(tmp_path / "ft")
    with pytest.raises(UnknownModelError):
        register_local("x-ft", "no-such-model", good)
    for base in ("hash", "splade-tiny"):
        with pytest.raises(ConfigError, match="cannot be the base"):
            register_local("x-ft", base, good)


def test_a_local_base_is_traced_to_its_registry_root(tmp_path: Path) -> None:
    register_local("first-ft", "all-minilm-l6-v2", model_dir(tmp_path / "one"))
    second = register_local("second-ft", "first-ft", model_dir(tmp_path / "two"))
    assert second.base == "all-minilm-l6-v2" and lookup_spec("second-ft").base == "all-minilm-l6-v2"


def test_missing_or_incomplete_directories(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        register_local("x-ft", "all-minilm-l6-v2", tmp_path / "nowhere")
    incomplete = model_dir(tmp_path / "incomplete")
    (incomplete / "tokenizer.json").unlink()
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json"):
        register_local("x-ft", "all-minilm-l6-v2", incomplete)
    assert local_models() == {}
    directory = model_dir(tmp_path / "ft")
    register_local("x-ft", "all-minilm-l6-v2", directory)
    resolved = resolve_model(lookup_spec("x-ft"), get_settings())
    assert (resolved.path, resolved.source) == (directory.resolve(), "local")
    (directory / "model.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="no longer holds its files"):
        resolve_model(lookup_spec("x-ft"), get_settings())


def test_pull_refuses_a_local_model(tmp_path: Path) -> None:
    register_local("x-ft", "all-minilm-l6-v2", model_dir(tmp_path / "ft"))
    with pytest.raises(ConfigError, match="no hub repository to download"):
        pull(lookup_spec("x-ft"), get_settings())


def test_reregister_and_remove(tmp_path: Path) -> None:
    register_local("x-ft", "all-minilm-l6-v2", model_dir(tmp_path / "one"))
    register_local("x-ft", "all-minilm-l6-v2", model_dir(tmp_path / "two"))
    assert local_models()["x-ft"].path == str((tmp_path / "two").resolve())
    assert remove_local("X-FT").name == "x-ft" and local_models() == {}
    with pytest.raises(UnknownModelError):
        remove_local("x-ft")


def test_corrupt_records_file_is_one_error(isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True, exist_ok=True)
    (isolated_home / "local_models.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"local_models\.json is not readable JSON"):
        lookup_spec("x-ft")
    assert lookup_spec("bge-m3").name == "bge-m3"  # registry names never read the file


def test_cli_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = model_dir(tmp_path / "ft")
    code, out, _ = run(["models", "add", "mini-ft", str(directory), "--base", "all-minilm-l6-v2"], capsys)
    assert code == 0 and "registered local model mini-ft (base all-minilm-l6-v2)" in out
    code, out, _ = run(["models", "list", "--json"], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["mini-ft"]["base"] == "all-minilm-l6-v2" and rows["mini-ft"]["available"] is True
    assert rows["mini-ft"]["source"] == "local" and rows["all-minilm-l6-v2"]["base"] is None
    (directory / "model.safetensors").unlink()
    code, out, _ = run(["models", "list", "--json"], capsys)
    assert code == 0 and {r["name"]: r for r in json.loads(out)}["mini-ft"]["available"] is False
    code, _, err = run(["models", "pull", "mini-ft"], capsys)
    assert code == 2 and "no hub repository" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run(["models", "remove", "mini-ft"], capsys)
    assert code == 0 and local_models() == {}


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_read_examples_names_the_bad_line(tmp_path: Path) -> None:
    good = {"query": "q", "positive": "p", "negatives": ["n"], "doc_id": "1", "chunk_id": 1, "origin": "title"}
    path = write_jsonl(tmp_path / "train.jsonl", [good, "", good])
    assert read_examples(path) == [Example("q", "p", ("n",), "1", 1, "title")] * 2
    minimal = write_jsonl(tmp_path / "minimal.jsonl", [{"query": "q", "positive": "p", "chunk_id": "x"}] * 2)
    assert read_examples(minimal) == [Example("q", "p")] * 2  # only query and positive are required
    cases = ["{broken", json.dumps([1]), json.dumps({"query": "q"}), json.dumps({**good, "positive": " "}),
             json.dumps({**good, "negatives": "n"})]
    for bad in cases:
        with pytest.raises(InputError, match=r"train.jsonl:2: "):
            read_examples(write_jsonl(tmp_path / "train.jsonl", [good, bad]))
    with pytest.raises(InputError, match="at least 2"):
        read_examples(write_jsonl(tmp_path / "train.jsonl", [good]))


def test_training_columns_apply_prefixes_and_fill_negatives() -> None:
    spec = get_spec("multilingual-e5-large")  # "query: " / "passage: "
    examples = [Example("q1", "p1", ("n1a", "n1b"), "1"), Example("q2", "p2", (), "2"), Example("q3", "p3", (), "3")]
    columns = training_columns(examples, spec, negatives=2, seed=0)
    assert columns["anchor"] == ["query: q1", "query: q2", "query: q3"]
    assert columns["positive"] == ["passage: p1", "passage: p2", "passage: p3"]
    assert (columns["negative_1"][0], columns["negative_2"][0]) == ("passage: n1a", "passage: n1b")
    for row in (1, 2):  # filled with other documents' positives, never the row's own
        filled = {columns["negative_1"][row], columns["negative_2"][row]}
        assert filled <= {"passage: p1", "passage: p2", "passage: p3"} - {columns["positive"][row]}
    assert training_columns(examples, spec, 2, seed=0) == columns
    assert set(training_columns(examples, spec, 0, seed=0)) == {"anchor", "positive"}


def test_train_params_are_checked() -> None:
    for bad in (TrainParams(epochs=0), TrainParams(batch_size=1), TrainParams(lr=0), TrainParams(max_steps=0),
                TrainParams(negatives=-1), TrainParams(max_length=2)):
        with pytest.raises(ConfigError):
            bad.checked()


def test_train_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    good = {"query": "q", "positive": "p", "negatives": []}
    cases = [
        (["--data", str(tmp_path / "missing")], "does not exist; create it with 'm3search finetune generate'"),
        (["--data", str(data), "--base", "no-such-model"], "unknown model 'no-such-model'"),
        (["--data", str(data), "--base", "hash"], "cannot be the base"),
        (["--data", str(data), "--name", "bge-m3"], "is the registry model"),
        (["--data", str(data), "--batch-size", "1"], "--batch-size at least 2"),
        (["--data", str(data), "--eval"], "--eval needs"),
    ]
    write_jsonl(data / "train.jsonl", [good, good])
    for args, message in cases:
        code, _, err = run(["finetune", "train", "--out", str(tmp_path / "out"), *args], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    write_jsonl(data / "train.jsonl", [good, "{oops"])
    code, _, err = run(["finetune", "train", "--data", str(data), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "train.jsonl:2: not a JSON object" in err and len(err.strip().splitlines()) == 1
    assert local_models() == {} and not (tmp_path / "out").exists()


def test_local_names_work_where_model_names_do(tmp_path: Path) -> None:
    from m3search import load_encoder
    from m3search.cli.images import wants_images

    register_local("x-ft", "multilingual-e5-large", model_dir(tmp_path / "ft", hidden=48))
    encoder = load_encoder("x-ft")  # construction is lazy: nothing is exported here
    assert (encoder.spec.name, encoder.spec.dim, encoder.spec.query_prefix) == ("x-ft", 48, "query: ")
    assert wants_images("x-ft") is False


def test_server_lists_local_models_and_resolves_their_names(tmp_path: Path, client: Any) -> None:
    register_local("x-ft", "all-minilm-l6-v2", model_dir(tmp_path / "ft", hidden=32))
    models = {m["id"]: m for m in client.get("/api/v1/models").json()["data"]}
    assert models["x-ft"]["dim"] == 32 and models["x-ft"]["pooling"] == "mean" and not models["x-ft"]["loaded"]
    unknown = client.post("/v1/embeddings", json={"model": "y-ft", "input": ["hello"]})
    assert unknown.status_code in (400, 404) and "x-ft" in unknown.text  # the error lists the local names
