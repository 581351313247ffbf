"""Find a model's files, offline first.

Order: explicit path -> a local model's own directory -> directories registered with ``m3search models add``
-> ``M3SEARCH_HOME/models/NAME`` -> the Hugging Face cache at the pinned revision -> installed model packages
-> a download with huggingface_hub (only when online and not ``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from m3search.errors import ConfigError, ModelNotFoundError
from m3search.models.files import check_model_dir, read_json_object, write_json_atomic
from m3search.models.local import local_dir
from m3search.models.registry import ModelSpec, get_spec
from m3search.settings import Settings

Source = Literal["path", "local", "registered", "home", "hf-cache", "package", "download"]


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are, and which step of the resolution order found them."""

    spec: ModelSpec
    path: Path
    source: Source


def _registry_file(settings: Settings) -> Path:
    return settings.home / "models.json"


def registered_dirs(settings: Settings) -> dict[str, str]:
    """Model name -> directory, as registered with ``m3search models add``."""
    return {str(k): str(v) for k, v in read_json_object(_registry_file(settings)).items()}


def register_dir(settings: Settings, name: str, path: Path) -> ResolvedModel:
    """Validate ``path`` as a copy of model ``name`` and remember it (atomic write)."""
    spec = get_spec(name)
    if not spec.needs_weights:
        raise ConfigError(f"model '{spec.name}' has no weights to register")
    directory = check_model_dir(path.expanduser().resolve(), spec.name)
    entries = registered_dirs(settings)
    entries[spec.name] = str(directory)
    write_json_atomic(_registry_file(settings), entries)
    return ResolvedModel(spec, directory, "registered")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def _hf_cache(spec: ModelSpec) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(
            spec.hf_repo, revision=spec.revision, local_files_only=True, cache_dir=str(hf_cache_dir())
        )
        return Path(path)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def _package_dir(spec: ModelSpec) -> Path | None:
    for package in spec.packages:
        found = importlib.util.find_spec(package.module)
        if found is not None and found.origin:
            candidate = Path(found.origin).parent / package.subdir
            if candidate.is_dir():
                return candidate
    return None


def find_local(spec: ModelSpec, settings: Settings, path: Path | None = None) -> ResolvedModel | None:
    """The first local copy in resolution order, without any network access."""
    if path is not None:
        return ResolvedModel(spec, check_model_dir(path.expanduser().resolve(), spec.name), "path")
    local = local_dir(spec, settings)
    if local is not None:
        return ResolvedModel(spec, local, "local")
    registered = registered_dirs(settings).get(spec.name)
    if registered:
        return ResolvedModel(spec, check_model_dir(Path(registered), spec.name), "registered")
    home = settings.models_dir / spec.name
    if home.is_dir():
        return ResolvedModel(spec, check_model_dir(home, spec.name), "home")
    cached = _hf_cache(spec)
    if cached is not None:
        return ResolvedModel(spec, check_model_dir(cached, spec.name), "hf-cache")
    packaged = _package_dir(spec)
    if packaged is not None:
        return ResolvedModel(spec, check_model_dir(packaged, spec.name), "package")
    return None


def _why_not_local(spec: ModelSpec, settings: Settings) -> str:
    hint = f"not in {settings.models_dir / spec.name}, nor in the Hugging Face cache at {spec.revision[:8]}"
    if spec.packages:
        hint += f", nor installed as the package '{spec.packages[0].pip}'"
    return hint


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face endpoint (``HF_ENDPOINT``) cannot be reached, or None if it can.

    One TCP connection instead of huggingface_hub's five retries with back-off (about 25 s offline).
    """
    url = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} is unreachable ({exc.strerror or exc})"


def pull(spec: ModelSpec, settings: Settings) -> ResolvedModel:
    """Download the pinned revision into ``M3SEARCH_HOME/models/NAME`` with huggingface_hub."""
    if not spec.needs_weights:
        raise ConfigError(f"model '{spec.name}' has no weights to download")
    if spec.base:
        raise ConfigError(f"model '{spec.name}' is a local model (derived from '{spec.base}'): it has no hub "
                          f"repository to download; its files are where it was registered ('m3search models list')")
    if settings.is_offline:
        raise ModelNotFoundError(spec.name, "downloads are disabled: M3SEARCH_OFFLINE or HF_HUB_OFFLINE is set")
    unreachable = hub_unreachable()
    if unreachable:
        raise ModelNotFoundError(spec.name, f"no network: {unreachable}")
    from huggingface_hub import snapshot_download

    target = settings.models_dir / spec.name
    try:
        snapshot_download(
            spec.hf_repo, revision=spec.revision, local_dir=str(target), allow_patterns=list(spec.files)
        )
    except Exception as exc:  # network stacks raise many unrelated types; all mean "no download"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(
            spec.name, f"downloading {spec.hf_repo}@{spec.revision[:8]} failed: {reason[:200]}"
        ) from exc
    return ResolvedModel(spec, check_model_dir(target, spec.name), "download")


def resolve_model(
    spec: ModelSpec, settings: Settings, path: Path | None = None, *, download: bool = True
) -> ResolvedModel:
    """Resolve ``spec`` to a directory, downloading only when allowed and online.

    Raises:
        ModelNotFoundError: nothing local and no download possible; the message says how to fix it.
        ModelFormatError: a candidate directory is incomplete.
    """
    found = find_local(spec, settings, path)
    if found is not None:
        return found
    if not download or settings.is_offline:
        raise ModelNotFoundError(spec.name, _why_not_local(spec, settings))
    return pull(spec, settings)
