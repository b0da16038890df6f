"""The ``streamrec`` command: one entry point, one sub-command per task.

Errors the user can fix (bad settings, bad arguments, unreachable services) print one line
``streamrec: error: …`` and exit non-zero; nothing prints a traceback for them.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType

import click
import typer

from core.errors import StreamrecError

_typer_click: ModuleType
try:  # typer >= 0.2x vendors click as typer._click and raises that copy's exceptions
    from typer._click import exceptions as _typer_click
except ImportError:  # older typer raises click's own
    _typer_click = click.exceptions

app = typer.Typer(
    name="streamrec",
    help="Event-driven streaming recommender: Kafka in, Redis state, gRPC out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# (module, name): each module in streamrec.commands exposes ``app`` or ``command``.
_GROUPS: tuple[tuple[str, str], ...] = (
    ("stack", "stack"),
    ("topics", "topics"),
    ("schemas", "schemas"),
    ("evaluate", "eval"),
    ("bench", "bench"),
    ("admin", "admin"),
    ("slo", "slo"),
)
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("produce", "produce"),
    ("replay", "replay"),
    ("export", "export"),
    ("serve", "serve"),
    ("worker", "worker"),
    ("demo", "demo"),
    ("config", "config"),
    ("monitor", "monitor"),
    ("status", "status"),
    ("recommend", "recommend"),
)


@app.callback()
def _root() -> None:
    """Event-driven streaming recommender: Kafka in, Redis state, gRPC out."""


def _register(argv: list[str]) -> None:
    """Import only the command being run (all of them for the top-level help).

    Start-up stays fast (the statistics stack alone costs ~1 s to import) and a command's
    import error cannot break the others.
    """
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    known = {name for _, name in (*_GROUPS, *_COMMANDS)}
    only = first if first in known else None
    for module_name, name in _GROUPS:
        if only in (None, name):
            module = import_module(f"streamrec.commands.{module_name}")
            app.add_typer(module.app, name=name)
    for module_name, name in _COMMANDS:
        if only in (None, name):
            module = import_module(f"streamrec.commands.{module_name}")
            app.command(name=name)(module.command)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit."""
    first_line = message.strip().splitlines()[0] if message.strip() else "failed"
    print(f"streamrec: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    args = sys.argv[1:] if argv is None else argv
    _register(args)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="streamrec", standalone_mode=False)
    except (click.exceptions.NoArgsIsHelpError, _typer_click.NoArgsIsHelpError) as exc:
        if exc.ctx is not None:
            print(exc.ctx.get_help())
        raise SystemExit(2) from None
    except (click.UsageError, _typer_click.UsageError) as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        fail(f"{exc.format_message()}{hint}")
    except (click.exceptions.Abort, typer.Abort):
        fail("aborted", 130)
    except StreamrecError as exc:  # settings errors included (SettingsError)
        fail(str(exc))
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (click.ClickException, _typer_click.ClickException) as exc:
        fail(exc.format_message(), exc.exit_code or 1)
    if isinstance(code, int):
        raise SystemExit(code)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
