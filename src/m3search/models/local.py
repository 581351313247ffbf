"""Local models: fine-tuned (or otherwise derived) models that live only on this machine.

A local model has a new name, a directory of files and a base model in the registry. Its :class:`ModelSpec` is the
base's (pooling, normalisation, prefixes, max tokens, family) under the new name, with no hub repository: it is never
downloaded, and its Matryoshka dimensions are dropped (fine-tuning does not keep them). Records are kept in
``M3SEARCH_HOME/local_models.json``; :func:`lookup_spec` is the one lookup of a model name that knows them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from m3search.errors import ConfigError, ModelFormatError, UnknownModelError
from m3search.models.files import WEIGHTS, check_model_dir, read_json_object, write_json_atomic
from m3search.models.registry import ModelSpec, get_spec, list_specs
from m3search.settings import Settings, get_settings

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")
_FILE = "local_models.json"


@dataclass(frozen=True)
class LocalModel:
    """One registered local model.

    Attributes:
        name: the model's name (lower case; letters, digits, ``.``, ``_``, ``-``).
        base: the registry model it derives from.
        path: its directory (``config.json``, ``tokenizer.json``, weights).
        dim: dimension of its dense vectors (the hidden size of its files).
        created: when it was registered (ISO 8601, UTC).
        description: free text shown by ``models list`` (e.g. what it was fine-tuned on).
        details: anything else worth keeping (training parameters, data set).
    """

    name: str
    base: str
    path: str
    dim: int
    created: str
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def _file(settings: Settings) -> Path:
    return settings.home / _FILE


def local_models(settings: Settings | None = None) -> dict[str, LocalModel]:
    """Every registered local model by name."""
    path = _file(settings or get_settings())
    data = read_json_object(path)
    try:
        return {str(name): LocalModel(**entry) for name, entry in data.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path} holds an entry m3search cannot read ({exc}); fix or delete it") from exc


def derive_spec(model: LocalModel) -> ModelSpec:
    """The facts of a local model: its base's, under its own name, dimension and description."""
    base = get_spec(model.base)
    return replace(
        base, name=model.name, hf_repo="", revision="", base=base.name, dim=model.dim, mrl_dims=(), packages=(),
        size_gb=0.0, description=model.description or f"local model derived from {base.name}",
    )


def lookup_spec(name: str, settings: Settings | None = None) -> ModelSpec:
    """A registry model (by name or repo id) or else a local model, by name (case-insensitive).

    Raises:
        UnknownModelError: neither knows ``name``; the message lists both.
    """
    try:
        return get_spec(name)
    except UnknownModelError:
        local = local_models(settings)
        model = local.get(name.strip().lower())
        if model is None:
            raise UnknownModelError(name, [s.name for s in list_specs()] + sorted(local)) from None
        return derive_spec(model)


def all_specs(settings: Settings | None = None) -> list[ModelSpec]:
    """The registry's models, then the local ones by name."""
    local = local_models(settings)
    return list_specs() + [derive_spec(local[name]) for name in sorted(local)]


def _hidden_size(directory: Path) -> int:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        return int(config.get("hidden_size") or config.get("d_model") or 0)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ModelFormatError(f"{directory / 'config.json'} is not a readable model config ({exc})") from exc


def check_local_name(name: str) -> str:
    """The normalised name, or :class:`ConfigError` if it is malformed or names a registry model."""
    key = name.strip().lower()
    if not _NAME.match(key):
        raise ConfigError(f"'{name}' cannot name a local model: use up to 80 lower-case letters, digits, '.', '_', "
                          f"'-', starting with a letter or digit")
    try:
        taken = get_spec(key)
    except UnknownModelError:
        return key
    raise ConfigError(f"'{name}' is the registry model '{taken.name}'; give the local model another name")


def base_spec(base: str, settings: Settings | None = None) -> ModelSpec:
    """The registry model a local model of ``base`` derives from (a local base is traced to its root).

    Raises:
        UnknownModelError: ``base`` is unknown.
        ConfigError: ``base`` has no dense weights to derive from (the hash fallback, sparse-only models).
    """
    spec = lookup_spec(base, settings)
    root = get_spec(spec.base) if spec.base else spec
    if not root.needs_weights or root.pooling not in ("cls", "mean", "last_token"):
        raise ConfigError(f"model '{root.name}' ({root.pooling} pooling) cannot be the base of a local dense model")
    return root


def register_local(
    name: str, base: str, path: Path, *, description: str = "", details: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> LocalModel:
    """Register (or re-register) ``path`` as local model ``name`` derived from ``base`` (atomic write).

    Raises:
        ConfigError: a bad name, a name of the registry, or a base without dense weights.
        UnknownModelError: ``base`` is not a known model.
        ModelFormatError: ``path`` is not a complete model directory.
    """
    cfg = settings or get_settings()
    key = check_local_name(name)
    root = base_spec(base, cfg)
    directory = check_model_dir(path.expanduser().resolve(), key)
    dim = _hidden_size(directory) if root.family != "mistral" else root.dim
    model = LocalModel(key, root.name, str(directory), dim or root.dim,
                       dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), description, dict(details or {}))
    derive_spec(model)  # validates the facts before anything is written
    entries = {n: asdict(m) for n, m in local_models(cfg).items()}
    entries[key] = asdict(model)
    write_json_atomic(_file(cfg), entries)
    return model


def remove_local(name: str, settings: Settings | None = None) -> LocalModel:
    """Forget local model ``name`` (its files stay where they are)."""
    cfg = settings or get_settings()
    models = local_models(cfg)
    model = models.pop(name.strip().lower(), None)
    if model is None:
        raise UnknownModelError(name, sorted(models))
    write_json_atomic(_file(cfg), {n: asdict(m) for n, m in models.items()})
    return model


def local_dir(spec: ModelSpec, settings: Settings) -> Path | None:
    """The directory of a local model's files (None for registry models).

    Raises:
        ModelFormatError: the model is no longer registered, or its directory is gone or incomplete.
    """
    if not spec.base:
        return None
    model = local_models(settings).get(spec.name)
    if model is None:
        raise ModelFormatError(f"local model '{spec.name}' is no longer registered in {_file(settings)}")
    directory = Path(model.path)
    if not directory.is_dir() or not any((directory / w).is_file() for w in WEIGHTS):
        raise ModelFormatError(
            f"local model '{spec.name}' was registered at {directory}, which no longer holds its files; restore "
            f"them, re-register with 'm3search models add {spec.name} DIR --base {spec.base}', or 'm3search models "
            f"remove {spec.name}'"
        )
    return check_model_dir(directory, spec.name)
