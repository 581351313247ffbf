"""The README's Python quick start runs as written (real MiniLM, a fresh store in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from m3search.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- tests/slow/test_readme_quickstart.py runs this block -->"


def quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    assert MARKER in text, "the README's Python quick start lost its marker"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER):], re.S)
    assert block is not None
    return block.group(1)


@pytest.mark.slow
def test_readme_python_quick_start_runs(settings: Settings, minilm_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the quick start's store is ./kb.sqlite3
    code = quick_start()
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    first = capsys.readouterr().out.splitlines()
    assert first[0] == "2 added, 0 unchanged"
    assert first[1].split()[1] == "upgrade"  # the upgrade answer ranks first for "how do I upgrade?"
    assert "'dense': 1" in first[1]
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})  # again: nothing re-embedded
    assert capsys.readouterr().out.splitlines()[0] == "0 added, 2 unchanged"
    assert (tmp_path / "kb.sqlite3").exists()
