"""Importing optional packages in tests (reference implementations, weight carriers, extras) truthfully.

``pytest.importorskip`` skips on *any* ImportError: an installed package that fails to import (FlagEmbedding under
transformers 5 raised ``ModuleNotFoundError: transformers.modeling_attn_mask_utils``) was reported as "not
installed", and the BGE-M3 conformance tests went unchecked. :func:`import_or_skip` skips only when the package is
genuinely absent and fails with the real error otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from types import ModuleType

import pytest


class BrokenReferenceError(RuntimeError):
    """An installed package that does not import: a test failure, never a skip."""


def _installed_distributions(top_level: str) -> list[str]:
    """Distributions whose files provide the top-level package ``top_level`` (empty when none is installed)."""
    return importlib.metadata.packages_distributions().get(top_level, [])


def import_or_skip(module: str, reason: str) -> ModuleType:
    """Import ``module``; skip with ``reason`` only when its top-level package is not installed at all.

    Any other import failure (a missing submodule or dependency, an incompatible version, a half-removed install)
    raises :class:`BrokenReferenceError`, chained to the real error, so the test fails and says why.
    """
    top_level = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == top_level and not _installed_distributions(top_level):
            pytest.skip(reason, allow_module_level=True)
        raise _broken(module, exc) from exc
    except ImportError as exc:
        raise _broken(module, exc) from exc


def _broken(module: str, exc: ImportError) -> BrokenReferenceError:
    dists = ", ".join(_installed_distributions(module.split(".")[0])) or "its package"
    return BrokenReferenceError(
        f"{module} is installed ({dists}) but fails to import: {type(exc).__name__}: {exc}. "
        "Fix the environment (pyproject.toml pins the working versions) instead of skipping."
    )
