"""Preparation: a resolved checkpoint becomes cached ONNX graphs (and OpenVINO/precision variants) with a manifest.

:mod:`.cache` owns the cache layout and the manifest; :mod:`.builder` writes the graphs without torch;
:mod:`.export` and :mod:`.clip_export` are the torch fallback; :mod:`.variants` adds precision modes and
OpenVINO files on first use; :mod:`.calibration` holds the texts INT8 calibration and the fidelity gate use.
"""

from m3search.models.prepare.cache import (
    FORMAT,
    MANIFEST,
    PreparedModel,
    cache_dir,
    load_prepared,
    lock_for,
    package_version,
    prepare_model,
    write_json,
)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "PreparedModel",
    "cache_dir",
    "load_prepared",
    "lock_for",
    "package_version",
    "prepare_model",
    "write_json",
]
