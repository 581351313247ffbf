from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from m3search.cli.app import app
from tests.cli import run_cli as run


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [(prefix, group)]
    if hasattr(group, "commands"):
        for name, command in group.commands.items():
            found.extend(_commands(command, (*prefix, name)))
    return found


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(typer.main.get_command(app))
    assert {" ".join(p) for p, _ in commands} >= {"", "embed", "demo", "models list", "models add",
                                                 "models pull", "models prepare"}
    for path, command in commands:
        assert (command.help or "").strip(), f"no help text for {path}"
        code, out, _ = run([*path, "--help"], capsys)
        assert code == 0 and "Usage" in out


def test_models_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models", "list", "--json"], capsys)
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and rows["bge-m3"]["available"] is False and rows["hash"]["available"] is True
    for row in rows.values():
        assert {"name", "dim", "max_tokens", "pooling", "outputs", "mrl_dims", "available"} <= set(row)
    assert rows["nomic-embed-text-v1.5"]["mrl_dims"] == [768, 512, 256, 128, 64]


def test_embed_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["embed", "--model", "hash", "--json", "hello world", "second text"], capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 2
    assert len(lines[0]["dense"]) == 384 and lines[0]["tokens"] == 2 and lines[0]["truncated"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "--model", "bge-m4", "x"], "unknown model 'bge-m4'"),
        (["embed", "--model", "bge-m3", "x"], "m3search models pull bge-m3"),
        (["embed", "--model", "hash", "--dim", "100", "x"], "not Matryoshka-trained"),
        (["embed", "--model", "hash", "--max-length", "2", "--on-overflow", "error", "a b c"], "input 0 has 3"),
        (["embed", "--model", "hash", "--on-overflow", "maybe", "x"], "--on-overflow"),
        (["models", "add", "bge-m3", "/nonexistent"], "does not exist"),
        (["models", "pull", "bge-m3"], "downloads are disabled"),
        (["models", "prepare", "nope"], "unknown model"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(args, capsys)
    assert code == 2 and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["embed", "--no-such-flag"], capsys)
    assert code == 2 and "No such option" in err


def test_console_script_reads_stdin(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "m3search"
    result = subprocess.run(
        [str(script), "embed", "--model", "hash", "--json"], input="one\ntwo words\n\n",
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["tokens"] for line in result.stdout.splitlines()] == [1, 2]
