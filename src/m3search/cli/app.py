"""The root ``m3search`` command and the one place that turns errors into exit codes (:mod:`~m3search.cli.exits`)."""

from __future__ import annotations

import os
import sys
import traceback

import typer
from rich.console import Console

from m3search.cli import demo, embed, exits, finetune, index, migrate, models, search, serve
from m3search.errors import InputError, M3SearchError
from m3search.ingest.sources import printable

app = typer.Typer(
    name="m3search",
    help="Local-first embedding and hybrid retrieval built around BAAI/bge-m3 (offline, CPU, ONNX). "
         "Exit codes: 0 done, 1 done with some inputs skipped (listed), 2 usage error or refused input.",
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


def check_arguments(args: list[str]) -> None:
    """:class:`InputError` for an argument that is not UTF-8 text (bytes a shell passed from a Latin-1 file or
    ``printf '\\xe9'``), unless it names an existing file: texts, ids, names and flags must be text."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            if not os.path.lexists(arg):
                raise InputError(f"argument '{printable(arg)}' is not valid UTF-8 text; pass texts, ids and names "
                                 f"as UTF-8") from None


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes exit with code 2 and one line on stderr, never a traceback."""
    try:
        check_arguments(sys.argv[1:] if argv is None else argv)
        app(args=argv, prog_name="m3search")  # typer exits itself: 0, or 2 for usage errors
    except M3SearchError as exc:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"m3search: error: {exc.message('cli')}",
                                                                    markup=False)
        sys.exit(exits.USAGE)
    except KeyboardInterrupt:
        sys.exit(exits.INTERRUPTED)
    except Exception:  # a bug: the traceback, and an exit code no user mistake or partial success uses
        traceback.print_exc()
        sys.exit(exits.INTERNAL)
