"""Reference pages generated from the code: the CLI reference from every command's own ``--help``
(``python -m m3search.cli.docs > docs/cli-reference.md``) and the settings table from the fields of
:class:`~m3search.settings.Settings` (``python -m m3search.cli.docs settings > docs/settings.md``). A unit test
regenerates both and compares them with the committed pages, so they cannot drift.

Help is rendered with click's plain formatter at a fixed width (typer's rich renderer, which depends on the terminal,
colours and installed fonts, is bypassed), so the page is the same on every machine.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator
from typing import Any

import typer
import typer.core
import typer.main

WIDTH = 100
COMMAND = "python -m m3search.cli.docs > docs/cli-reference.md"
SETTINGS_COMMAND = "python -m m3search.cli.docs settings > docs/settings.md"
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


def _default(name: str, field: Any) -> str:
    if name == "home":  # platform-dependent: say where, not this machine's path
        return "platformdirs' user data dir (`~/.local/share/m3search` on Linux)"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`" if value != [] else "`[]`"


def _values(annotation: Any) -> str:
    """What a variable accepts: the choices of a ``Literal``, else the type's name."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return ", ".join(f"`{a}`" for a in args)
    if args and all(typing.get_origin(a) is typing.Literal for a in args):
        return ", ".join(f"`{v}`" for a in args for v in typing.get_args(a))
    if len(args) == 1 and typing.get_origin(annotation) is not list:
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        return "JSON list"
    return {"Path": "path", "SecretStr": "secret", "str": "text", "int": "integer", "float": "number",
            "bool": "true/false"}.get(getattr(annotation, "__name__", ""), str(annotation))


def render_settings() -> str:
    """The settings page (Markdown): every field of :class:`~m3search.settings.Settings` as its variable."""
    from m3search.settings import Settings

    lines = ["# Settings", "",
             "<!-- Generated from the fields of m3search.settings.Settings: do not edit. Regenerate with",
             f"     {SETTINGS_COMMAND} -->", "",
             "Every tunable is an environment variable: prefix `M3SEARCH_`, nested keys with `__`. Settings are read "
             "when used, never at import; in Python, `m3search.get_settings(**overrides)` reads them now, with "
             "explicit values on top, and most functions take a `settings=` argument.", "",
             "| variable | default | values | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        lines.append(f"| `M3SEARCH_{name.upper()}` | {_default(name, field)} | {_values(field.annotation)} | "
                     f"{meaning} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """``python -m m3search.cli.docs [settings]``: print the CLI reference, or the settings page."""
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["settings"]):
        sys.exit(f"usage: {COMMAND}\n       {SETTINGS_COMMAND}")
    sys.stdout.write(render_settings() if args else render())


if __name__ == "__main__":
    main()
