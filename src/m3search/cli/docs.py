"""The CLI reference page, generated from every command's own ``--help``: ``python -m m3search.cli.docs >
docs/cli-reference.md``. A unit test regenerates it and compares it with the committed page, so it cannot drift.

Help is rendered with click's plain formatter at a fixed width (typer's rich renderer, which depends on the terminal,
colours and installed fonts, is bypassed), so the page is the same on every machine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import typer
import typer.core
import typer.main

WIDTH = 100
COMMAND = "python -m m3search.cli.docs > docs/cli-reference.md"
Context = typer.Context


def plain_help(command: typer.core.TyperCommand | typer.core.TyperGroup, ctx: Context) -> str:
    """``command``'s ``--help`` text as click writes it (no rich panels, no colour), ``WIDTH`` columns wide."""
    formatter = ctx.make_formatter()
    if isinstance(command, typer.core.TyperGroup):
        super(typer.core.TyperGroup, command).format_help(ctx, formatter)
    else:
        super(typer.core.TyperCommand, command).format_help(ctx, formatter)
    return formatter.getvalue().rstrip() + "\n"


def _context(command: typer.core.TyperCommand | typer.core.TyperGroup, name: str, parent: Context | None) -> Context:
    return typer.Context(command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH,
                         color=False)


def _walk(command: typer.core.TyperCommand | typer.core.TyperGroup, ctx: Context
          ) -> Iterator[tuple[Context, typer.core.TyperCommand | typer.core.TyperGroup]]:
    """Every command below ``command`` (itself first), in the order ``--help`` lists them."""
    yield ctx, command
    if isinstance(command, typer.core.TyperGroup):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if isinstance(sub, typer.core.TyperCommand | typer.core.TyperGroup) and not sub.hidden:
                yield from _walk(sub, _context(sub, name, ctx))


def render(app: typer.Typer | None = None) -> str:
    """The whole reference page (Markdown): an index, then each command's ``--help`` in a text block."""
    if app is None:
        from m3search.cli.app import app as m3search_app

        app = m3search_app
    root = typer.main.get_command(app)
    if not isinstance(root, typer.core.TyperGroup):  # pragma: no cover - m3search's app is always a group
        raise TypeError("the m3search app is expected to be a command group")
    pages = list(_walk(root, _context(root, "m3search", None)))
    lines = ["# Command-line reference", "",
             "<!-- Generated from the commands' --help: do not edit. Regenerate with",
             f"     {COMMAND} -->", "",
             "Every command's `--help`, as printed by `m3search COMMAND --help`. Exit codes, limits and error "
             "messages: [cli.md](cli.md).", ""]
    lines += [f"- [`{ctx.command_path}`](#{ctx.command_path.replace(' ', '-')})" for ctx, _ in pages]
    for ctx, command in pages:
        lines += ["", f"## {ctx.command_path}", "", "```text", plain_help(command, ctx).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
