"""Texts for calibrating int8-static and for checking every precision mode's fidelity to fp32.

Two bundled sets, disjoint: ``calibration.txt`` (300 texts: Debian FAQ answers and questions in six languages,
Cranfield abstracts) and ``fidelity.txt`` (64 held-out texts of the same kinds). Users calibrate on their own
texts with ``M3SEARCH_CALIBRATION_FILE`` (one text per line); the fidelity sample stays the bundled one so
that figures are comparable across models and machines.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from m3search.errors import InputError

CALIBRATION_MAX_LENGTH = 512  # calibration statistics come from typical passages, not 8k-token documents


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def bundled(name: str) -> list[str]:
    """A bundled text set: ``calibration`` or ``fidelity``."""
    return _lines(resources.files("m3search.data").joinpath(f"{name}.txt").read_text(encoding="utf-8"))


def calibration_texts(path: Path | None, limit: int) -> list[str]:
    """Up to ``limit`` calibration texts from ``path`` (one per line), else the bundled set.

    Raises:
        InputError: the file cannot be read, is not UTF-8, or holds no text.
    """
    if path is None:
        return bundled("calibration")[:limit]
    try:
        texts = _lines(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read calibration file {path}: {exc}") from exc
    if not texts:
        raise InputError(f"calibration file {path} holds no text (one text per line expected)")
    return texts[:limit]
