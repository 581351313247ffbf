"""The root ``m3search`` command and the one place that turns errors into exit codes."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from m3search.cli import demo, embed, finetune, index, migrate, models, search, serve
from m3search.errors import M3SearchError

app = typer.Typer(
    name="m3search",
    help="Local-first embedding and hybrid retrieval built around BAAI/bge-m3 (offline, CPU, ONNX).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(finetune.app, name="finetune")
app.command("embed")(embed.embed)
app.command("demo")(demo.demo)
app.command("index")(index.index)
app.command("delete")(index.delete)
app.command("reembed")(index.reembed)
app.command("status")(index.status)
app.command("gc")(index.gc)
app.command("search")(search.search)
app.command("eval")(search.eval_command)
app.command("serve")(serve.serve)
app.command("migrate-store")(migrate.migrate_store)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes exit with code 2 and one line on stderr, never a traceback."""
    try:
        app(args=argv, prog_name="m3search")  # typer exits itself: 0, or 2 for usage errors
    except M3SearchError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"m3search: error: {exc}", markup=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
