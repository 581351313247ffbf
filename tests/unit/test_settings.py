from __future__ import annotations

from pathlib import Path

import pytest

from m3search.settings import Settings, get_settings


def test_environment_is_read_when_called(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("M3SEARCH_HOME", str(tmp_path / "x"))
    monkeypatch.setenv("M3SEARCH_THREADS", "3")
    monkeypatch.setenv("M3SEARCH_BATCH_TOKENS", "1234")
    monkeypatch.setenv("M3SEARCH_PRECISION", "fp32")
    settings = get_settings()
    assert settings.home == tmp_path / "x" and settings.models_dir == tmp_path / "x" / "models"
    assert (settings.threads, settings.batch_tokens, settings.precision) == (3, 1234, "fp32")
    assert settings.effective_threads() == 3


def test_overrides_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3SEARCH_DEFAULT_MODEL", "hash")
    assert get_settings(default_model="all-minilm-l6-v2").default_model == "all-minilm-l6-v2"


def test_offline_flag_honours_hf_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not Settings().is_offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert Settings().is_offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("M3SEARCH_OFFLINE", "true")
    assert Settings().is_offline


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3SEARCH_PRECISION", "int4")
    with pytest.raises(ValueError, match="precision"):
        get_settings()


def test_default_home_is_not_a_temp_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M3SEARCH_HOME")
    assert "m3search" in str(Settings().home) and not str(Settings().home).startswith("/tmp")
