from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from m3search.errors import ConfigError, UnknownModelError
from m3search.models.registry import get_spec, list_specs

REQUIRED = {
    # name: (dim, max_tokens, pooling, outputs, mrl_dims)
    "bge-m3": (1024, 8192, "cls", ("dense", "sparse", "colbert"), ()),
    "all-minilm-l6-v2": (384, 256, "mean", ("dense",), ()),
    "nomic-embed-text-v1.5": (768, 8192, "mean", ("dense",), (768, 512, 256, 128, 64)),
    "bge-large-en-v1.5": (1024, 512, "cls", ("dense",), ()),
    "mxbai-embed-large-v1": (1024, 512, "cls", ("dense",), (1024, 512, 256, 128, 64)),
    "e5-mistral-7b-instruct": (4096, 4096, "last_token", ("dense",), ()),
    "multilingual-e5-large": (1024, 512, "mean", ("dense",), ()),
    "splade-tiny": (30522, 512, "splade", ("sparse",), ()),
    "hash": (384, 8192, "hash", ("dense",), ()),
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_model_facts(name: str) -> None:
    spec = get_spec(name)
    assert (spec.dim, spec.max_tokens, spec.pooling, spec.outputs, spec.mrl_dims) == REQUIRED[name]


def test_prefixes_follow_the_model_cards() -> None:
    assert get_spec("bge-m3").query_prefix == "" and get_spec("bge-m3").doc_prefix == ""
    assert get_spec("nomic-embed-text-v1.5").query_prefix == "search_query: "
    assert get_spec("nomic-embed-text-v1.5").doc_prefix == "search_document: "
    assert get_spec("multilingual-e5-large").doc_prefix == "passage: "
    assert get_spec("bge-large-en-v1.5").query_prefix.startswith("Represent this sentence")
    assert get_spec("e5-mistral-7b-instruct").query_prefix.startswith("Instruct: ")


def test_every_weighted_model_pins_a_revision() -> None:
    for spec in list_specs():
        if spec.needs_weights:
            assert len(spec.revision) == 40 and int(spec.revision, 16) > 0, spec.name
            assert spec.hf_repo and spec.license and spec.size_gb > 0


def test_lookup_by_repo_id_is_case_insensitive() -> None:
    assert get_spec("BAAI/bge-m3").name == "bge-m3"
    assert get_spec("  Sentence-Transformers/all-MiniLM-L6-v2 ").name == "all-minilm-l6-v2"


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="known models: bge-m3"):
        get_spec("bge-m4")


def test_specs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_spec("bge-m3").dim = 3  # type: ignore[misc]


def test_check_dim_accepts_mrl_dims_only() -> None:
    nomic = get_spec("nomic-embed-text-v1.5")
    assert nomic.check_dim(256) == 256 and nomic.check_dim(None) == 768
    with pytest.raises(ConfigError, match="768, 512, 256, 128, 64"):
        nomic.check_dim(300)
    with pytest.raises(ConfigError, match="not Matryoshka-trained"):
        get_spec("bge-m3").check_dim(512)


@pytest.mark.parametrize(
    "changes",
    [{"dim": 0}, {"outputs": ()}, {"mrl_dims": (64, 128)}, {"revision": "main"}],
)
def test_invalid_specs_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(get_spec("mxbai-embed-large-v1"), **changes)  # type: ignore[arg-type]


def test_a_model_directory_of_another_size_sets_the_dimension(tmp_path: Path) -> None:
    from m3search.models.encoders.loader import _sized_like

    spec = get_spec("mxbai-embed-large-v1")
    (tmp_path / "config.json").write_text('{"hidden_size": 32}')
    sized = _sized_like(spec, tmp_path)
    assert (sized.dim, sized.mrl_dims) == (32, ())  # not the Matryoshka-trained model any more
    (tmp_path / "config.json").write_text('{"hidden_size": 1024}')
    assert _sized_like(spec, tmp_path) == spec
    assert _sized_like(spec, tmp_path / "missing") == spec
