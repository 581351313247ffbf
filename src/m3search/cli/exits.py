"""The exit codes of every ``m3search`` command (documented in docs/cli.md), defined once."""

from __future__ import annotations

OK = 0
"""Everything asked was done."""
PARTIAL = 1
"""Done, but some inputs were skipped or not found (each is listed with its reason): ``index`` with unreadable
files, ``delete`` with ids that are not stored."""
USAGE = 2
"""Nothing (more) was done because of the caller: an unknown flag, a bad value, a missing collection or model, a
refused input. One line on stderr, never a traceback."""
INTERNAL = 70
"""A bug in m3search (EX_SOFTWARE): the traceback is printed; please report it."""
INTERRUPTED = 130
"""Ctrl-C."""
