"""Checks, reads and writes shared by the model lookups: a usable model directory, JSON files written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from m3search.errors import ConfigError, ModelFormatError

WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.onnx")


def check_model_dir(path: Path, name: str) -> Path:
    """Raise a ModelFormatError naming what is missing unless ``path`` holds a usable model."""
    if not path.is_dir():
        raise ModelFormatError(f"model directory {path} does not exist or is not a directory")
    missing = [f for f in ("config.json", "tokenizer.json") if not (path / f).is_file()]
    if not any((path / w).is_file() for w in WEIGHTS):
        missing.append(" or ".join(WEIGHTS))
    if missing:
        raise ModelFormatError(
            f"model directory {path} for '{name}' lacks {', '.join(missing)}; copy the complete model "
            f"there or run 'm3search models pull {name}'"
        )
    return path


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when the file does not exist), or a ConfigError saying to fix it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object; fix or delete it")
    return data


def write_json_atomic(target: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``target`` through a temporary file and a rename (never half-written)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        raise ConfigError(f"cannot write {target} ({exc}); set M3SEARCH_HOME to a writable directory") from exc

def read_config(src: Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``, or a clear error if it is missing or not JSON."""
    path = src / "config.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelFormatError(f"{src} has no config.json: it is not a Hugging Face model directory") from exc
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} is not a JSON object: it is not a Hugging Face model config")
    return data
