"""Settings from the environment (prefix ``M3SEARCH_``, nested keys with ``__``).

Nothing is read at import time: call :func:`get_settings` where a value is needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Precision = Literal["int8", "fp32"]


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("m3search", appauthor=False))


class Settings(BaseSettings):
    """Every tunable of m3search; each maps to an ``M3SEARCH_*`` variable."""

    model_config = SettingsConfigDict(env_prefix="M3SEARCH_", env_nested_delimiter="__", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="where models, indexes and config live")
    default_model: str = Field("bge-m3", description="model used when none is named")
    threads: int = Field(0, ge=0, description="intra-op threads per ONNX session; 0 = all cores")
    batch_tokens: int = Field(8192, ge=1, description="token budget of one batch (padded tokens)")
    max_batch_size: int = Field(64, ge=1, description="at most this many texts in one batch")
    max_length: int | None = Field(None, ge=1, description="default max tokens per input; None = model's")
    precision: Precision = Field("int8", description="default ONNX precision for encoders")
    offline: bool = Field(False, description="never try to download (HF_HUB_OFFLINE=1 implies it)")

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def models_dir(self) -> Path:
        """Models converted or registered by m3search."""
        return self.home / "models"

    @property
    def is_offline(self) -> bool:
        """Offline if asked, or if the Hugging Face hub is told to be."""
        hub_flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        return self.offline or hub_flag

    def effective_threads(self) -> int:
        """Threads to give one ONNX session."""
        return self.threads or (os.cpu_count() or 1)


def get_settings(**overrides: object) -> Settings:
    """Read settings from the environment now, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
