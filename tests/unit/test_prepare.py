from __future__ import annotations

import hashlib
import os
from pathlib import Path

from m3search.models.prepare.cache import load_prepared, source_key


def _model(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    (directory / "model.safetensors").write_bytes(b"weights")
    return directory


def test_source_key_follows_the_files_even_under_a_cache_folder(tmp_path: Path) -> None:
    model = _model(tmp_path / ".cache" / "bench" / "model")  # e.g. benchmarks/.cache/...
    first = source_key(model)
    assert first != hashlib.sha256(b"").hexdigest()[:16]  # the files were seen, not skipped
    (model / "model.safetensors").write_bytes(b"other weights")
    assert source_key(model) != first


def test_source_key_ignores_the_hub_download_cache(tmp_path: Path) -> None:
    model = _model(tmp_path / "model")
    before = source_key(model)
    (model / ".cache" / "huggingface").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "lock").write_text("x")
    assert source_key(model) == before
    os.utime(model / "config.json", ns=(1, 1))
    assert source_key(model) != before


def test_incomplete_prepared_directory_is_not_used(tmp_path: Path) -> None:
    assert load_prepared(tmp_path) is None
    (tmp_path / "manifest.json").write_text("{not json")
    assert load_prepared(tmp_path) is None
