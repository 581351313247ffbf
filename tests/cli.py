"""Running the ``m3search`` CLI in-process, as a user would, and capturing what it prints."""

from __future__ import annotations

import pytest

from m3search.cli.app import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``m3search ARGS``: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err
