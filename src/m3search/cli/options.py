"""Command-line options shared by the commands that load encoders."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer

from m3search.errors import ConfigError
from m3search.settings import BACKENDS, PRECISIONS, Backend, Precision, Settings, get_settings

BackendOption = Annotated[
    str | None, typer.Option("--backend", help="onnxruntime, openvino or auto (default: M3SEARCH_BACKEND, auto)")
]
PrecisionOption = Annotated[
    str | None,
    typer.Option("--precision", "-p", help="fp32, bf16, int8-dynamic (alias int8) or int8-static (default: settings)"),
]
ForceOption = Annotated[
    bool, typer.Option("--force-precision", help="use the precision even if it fails the fidelity check")
]


def encoder_settings(backend: str | None, precision: str | None, force: bool) -> tuple[Settings, dict[str, Any]]:
    """Settings with the command line's overrides, and the keyword arguments for ``load_encoder``.

    Raises:
        ConfigError: an unknown backend or precision (one line for the CLI, exit code 2).
    """
    if backend is not None and backend not in ("auto", *BACKENDS):
        raise ConfigError(f"--backend must be auto, {', '.join(BACKENDS)}; not {backend!r}")
    if precision is not None and precision not in (*PRECISIONS, "int8"):
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (or int8); not {precision!r}")
    settings = get_settings(**({"force_precision": True} if force else {}))
    kwargs: dict[str, Any] = {"settings": settings}
    if backend is not None:
        kwargs["backend"] = cast(Backend, backend)
    if precision is not None:
        kwargs["precision"] = cast(Precision, precision)
    return settings, kwargs
