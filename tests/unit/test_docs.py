"""The documentation cannot drift: generated pages equal what the code renders now, links resolve, the README stays
short and names the commands CI runs."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from m3search.cli import docs
from m3search.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _committed(name: str) -> str:
    page = ROOT / "docs" / name
    return page.read_text(encoding="utf-8") if page.exists() else ""


@pytest.mark.parametrize(("name", "render", "command"), [
    ("cli-reference.md", docs.render, docs.COMMAND),
    ("settings.md", docs.render_settings, docs.SETTINGS_COMMAND),
])
def test_generated_page_is_up_to_date(name: str, render: object, command: str) -> None:
    assert callable(render)
    if render() != _committed(name):
        pytest.fail(f"docs/{name} is out of date with the code: run `{command}`")


def test_cli_reference_lists_every_command_with_its_options() -> None:
    page = docs.render()
    for command in ("m3search index", "m3search search", "m3search models prepare", "m3search finetune train",
                    "m3search migrate-store", "m3search serve"):
        assert f"\n## {command}\n" in page
    assert "--collection" in page and "--rerank-k" in page and "\x1b[" not in page  # no colour codes
    blocks = [part.split("```", 1)[0] for part in page.split("```text")[1:]]
    assert len(blocks) == page.count("\n## ")
    assert all(len(line) <= docs.WIDTH for block in blocks for line in block.splitlines())


def test_settings_page_names_every_setting_with_its_default() -> None:
    page = docs.render_settings()
    for name, field in Settings.model_fields.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `M3SEARCH_{name.upper()}` |"))
        if isinstance(field.default, int | float | str) and not isinstance(field.default, bool):
            assert f"`{field.default}`" in row


def test_generator_refuses_unknown_arguments() -> None:
    with pytest.raises(SystemExit, match="usage"):
        docs.main(["nope"])


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = [target for target, _ in LINK.findall(page.read_text(encoding="utf-8"))
              if "://" not in target and not target.startswith("mailto:")
              and not (page.parent / target).exists()]
    assert broken == [], f"{page.name} links to missing files: {broken}"


def test_readme_is_short_and_runs_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 12 * 1024
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "\nmake test\n" in ci and "make test" in readme and "make demo" in readme


def test_docs_index_lists_every_page() -> None:
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES if p.name != "index.md" and f"({p.name})" not in index]
    assert missing == []


def test_benchmarks_page_links_every_results_page() -> None:
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    assert results
    assert [r.name for r in results if f"(../benchmarks/results/{r.name})" not in page] == []


def test_anchors_of_links_between_pages_exist() -> None:
    def anchors(page: Path) -> set[str]:
        heads = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
        return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}

    missing = []
    for page in [ROOT / "README.md", *PAGES]:
        for target, anchor in LINK.findall(page.read_text(encoding="utf-8")):
            path = page.parent / target
            if anchor and path.suffix == ".md" and path.exists() and anchor[1:] not in anchors(path):
                missing.append(f"{page.name} -> {target}{anchor}")
        own = anchors(page)
        missing += [f"{page.name} -> {a}" for a in re.findall(r"\]\(#([^)\s]+)\)", page.read_text(encoding="utf-8"))
                    if a not in own]
    assert missing == []


def _resolves(dotted: str) -> bool:
    """Whether ``m3search.a.b.C`` names a module, or an attribute of the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_python_names_and_source_paths_in_the_docs_exist() -> None:
    """Every ``m3search.x.y`` the pages name, every ``from m3search... import`` line and every ``src/m3search/...``
    path exists: a module moved without its documentation fails here, naming the page."""
    stale = []
    for page in [ROOT / "README.md", *PAGES]:
        text = page.read_text(encoding="utf-8")
        stale += [f"{page.name}: {name}" for name in sorted(set(re.findall(r"\bm3search(?:\.\w+)+", text)))
                  if not _resolves(name)]
        for module, names in re.findall(r"^\s*from (m3search[\w.]*) import ([^\n#]+)", text, re.M):
            for name in (n.strip().split(" as ")[0] for n in names.strip("() ").split(",")):
                if name and not _resolves(f"{module}.{name}"):
                    stale.append(f"{page.name}: from {module} import {name}")
        stale += [f"{page.name}: {path}" for path in re.findall(r"`(src/m3search/[\w/.]+)`", text)
                  if not (ROOT / path).exists()]
    assert stale == [], f"the docs name Python modules, names or files that do not exist: {stale}"


def _documented_commands() -> list[tuple[str, str]]:
    """(page, command line) for every ``m3search ...`` line of the pages' bash blocks; optional ``[--flag]`` parts
    are kept as flags, and of alternatives (``a|b``, ``--x/--no-x``) the first is taken."""
    found = []
    for page in [ROOT / "README.md", *PAGES]:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if "m3search " not in line or not line[line.index("m3search "):].startswith("m3search "):
                    continue
                command = re.sub(r"\[(-[^\]]*)\]", r"\1", line[line.index("m3search "):])
                command = re.sub(r"(--[\w-]+)/--[\w-]+", r"\1", command)
                command = re.sub(r"(?<=\s)([\w.-]+)(\|[\w.-]+)+", r"\1", command)
                found.append((page.name, command))
    return found


def test_documented_command_lines_name_existing_commands_and_flags() -> None:
    """Each documented ``m3search`` line parses (commands, flags, their arity) up to ``--help``: a renamed flag fails
    here, naming the page."""
    from typer.testing import CliRunner

    from m3search.cli.app import app

    commands = _documented_commands()
    assert len(commands) > 30
    runner = CliRunner()
    wrong = [f"{page}: {command}" for page, command in commands
             if "..." not in command and runner.invoke(app, [*shlex.split(command)[1:], "--help"]).exit_code != 0]
    assert wrong == []
