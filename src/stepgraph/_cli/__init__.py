"""The ``stepgraph`` command line (typer + rich)."""

from __future__ import annotations

import errno
import os
import sys
import traceback
from collections.abc import Sequence

from .._core import lone_surrogate_at, quoted

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepgraph`` console script. A problem nobody
    foresaw is still one line (``STEPGRAPH_TRACEBACK=1`` shows where)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # (what print() kept back meets a closed pipe here, not at exit)
        return code
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
        from rich.console import Console

        from ._app import app  # (in here: Ctrl-C while it loads is a stop too)

        # rich ends the process with exit 1 and nothing said when standard
        # output is closed under it (its on_broken_pipe), in every console --
        # ours and the one typer prints help with -- so `stepgraph checkpoints
        # list | head -1` "failed". A closed pipe is raised instead, and ends
        # in 141 below, as SIGPIPE ends other programs.
        args = list(argv) if argv is not None else sys.argv[1:]
        unreadable = _not_utf8(args)
        if unreadable is not None:
            print(f"error: {unreadable}", file=sys.stderr)
            return 1
        plain = Console.on_broken_pipe
        Console.on_broken_pipe = _raise_broken_pipe  # type: ignore[method-assign,assignment]
        try:
            code = app(
                args=args,
                prog_name="stepgraph",
                standalone_mode=False,
            )
        finally:
            Console.on_broken_pipe = plain  # type: ignore[method-assign]
    except BrokenPipeError:
        raise
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
        if _output_was_closed():  # (click's own exit 1 on a closed pipe)
            raise BrokenPipeError(errno.EPIPE, "standard output was closed") from None
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return code if isinstance(code, int) else 0


def _not_utf8(args: Sequence[str]) -> str | None:
    """What is wrong with the first argument holding bytes that are not
    UTF-8 (Python keeps each as a lone surrogate, which no id, input, store
    or path of stepgraph's can hold: it failed deep in a store), or None."""
    for position, arg in enumerate(args, 1):
        at = lone_surrogate_at(arg)
        if at is not None:
            return (
                f"argument {position} ({quoted(arg)}) holds a byte that is not UTF-8 (at "
                f"character {at}); stepgraph reads its arguments as UTF-8"
            )
    return None


def _raise_broken_pipe(console: object) -> None:
    raise BrokenPipeError(errno.EPIPE, "standard output was closed")


def _output_was_closed() -> bool:
    """Whether click met a closed pipe and ended the command with exit 1 --
    it wraps the standard streams to silence their flush at exit; they are
    unwrapped again (``main`` sends what is left to /dev/null itself)."""
    closed = False
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        # (typer has a copy of click of its own: its class, by name)
        if type(stream).__name__ == "PacifyFlushWrapper" and hasattr(stream, "wrapped"):
            setattr(sys, name, stream.wrapped)
            closed = True
    return closed


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
