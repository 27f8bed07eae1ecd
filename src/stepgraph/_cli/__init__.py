"""The ``stepgraph`` command line (typer + rich)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepgraph`` console script. A problem nobody
    foresaw is still one line (``STEPGRAPH_TRACEBACK=1`` shows where)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # (``stepgraph | head``: the reader went away)
        try:  # (the flush at exit goes nowhere rather than fail again)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        return 141  # (as SIGPIPE ends other programs, and a run in this case)


def _main(argv: Sequence[str] | None) -> int:
    try:
        from ._app import app  # (in here: Ctrl-C while it loads is a stop too)

        code = app(
            args=list(argv) if argv is not None else None,
            prog_name="stepgraph",
            standalone_mode=False,
        )
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    except Exception as error:
        # typer raises click's exceptions (from its own copy of click): a bad
        # option or argument exits 1 like every other problem (2 means
        # "waiting for answers"); a command group without a command shows help.
        kind = type(error).__name__
        if kind == "Abort":  # Ctrl-C at a prompt
            print("stopped.", file=sys.stderr)
            return 130
        if kind == "NoArgsIsHelpError":
            print(error.format_message())  # type: ignore[attr-defined]
            return 0
        if hasattr(error, "format_message") and hasattr(error, "exit_code"):
            context = getattr(error, "ctx", None)
            hint = f" (see: {context.command_path} --help)" if context is not None else ""
            print(f"error: {error.format_message()}{hint}", file=sys.stderr)
            return 1
        return _unexpected(error)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return code if isinstance(code, int) else 0


def _unexpected(error: Exception) -> int:
    if os.environ.get("STEPGRAPH_TRACEBACK"):
        traceback.print_exception(error)
    print(
        f"error: {type(error).__name__}: {error} (an unexpected failure; set "
        "STEPGRAPH_TRACEBACK=1 to see where, and please report it)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
