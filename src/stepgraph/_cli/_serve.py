"""``stepgraph serve``: the HTTP API and web console (``stepgraph._serve``)."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer
from rich.console import Console

from .._exceptions import StepgraphError
from .._otel._setup import export_from_env
from ._load import (
    DEFAULT_STORE,
    CliError,
    StoreMode,
    is_postgres,
    load_target,
    open_store,
    store_path,
)
from ._render import say

__all__ = ["serve"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_HINT = "stepgraph serve needs Starlette and uvicorn: pip install 'stepgraph[serve]'"


def serve(
    targets: Annotated[
        list[str],
        typer.Argument(
            metavar="TARGET",
            help="MODULE:ATTR of each workflow to serve (a Workflow or a function returning one)",
        ),
    ],
    store: Annotated[
        str, typer.Option("--store", help="checkpoint store: sqlite:PATH or postgresql://...")
    ] = DEFAULT_STORE,
    host: Annotated[str, typer.Option("--host", help="address to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="port (0: any free one)")
    ] = 8321,
    token: Annotated[
        str | None,
        typer.Option("--token", help="require this bearer token (made up when off loopback)"),
    ] = None,
    otel: Annotated[
        bool,
        typer.Option("--otel", help="export runs' traces and metrics over OTLP (OTEL_* variables)"),
    ] = False,
) -> None:
    """Serve the workflows over HTTP with a web console: start runs, watch
    them live, answer requests, cancel, resume and fork (same store as run)."""
    try:
        from .._serve import ServedWorkflow, bind, is_loopback, unroutable
        from .._serve import serve as serve_forever
    except ImportError as exc:
        raise _fail(f"{_HINT} ({exc})") from None
    opened = None
    stop_exporting = None
    try:
        if token is not None and len(token) < 16:
            raise CliError("--token must be at least 16 characters (or leave it out to get one)")
        if token is not None and not (token.isascii() and token.isprintable()):
            # (a browser sends only such headers: the console could never use it)
            raise CliError("--token must be printable ASCII characters (letters, digits, %&#+ ...)")
        if token is not None and token != token.strip():
            raise CliError("--token must not begin or end with a space")
        served = []
        for target in targets:
            workflow, factory = load_target(target)
            if (reason := unroutable(workflow.name)) is not None:
                raise CliError(f"{target}: {reason}; build it with another name to serve it")
            served.append(ServedWorkflow(workflow, factory, _summary(factory)))
        names = [w.name for w in served]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise CliError(f"two targets build workflows named {twice[0]!r}; serve one of them")
        try:  # (once the targets are loaded: a module may have set OpenTelemetry up itself)
            stop_exporting = export_from_env() if otel else None
        except ImportError as exc:
            raise CliError(str(exc)) from None
        try:  # (first: a port in use creates no store)
            listening = bind(host, port)
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        existed = is_postgres(store) or store_path(store).exists()
        opened = open_store(store, StoreMode.CREATE)
        if not existed:
            say(err, f"creating checkpoint store {store_path(store)}", style="dim")
        if not is_loopback(host) and token is None:
            say(err, f"listening on {host}: a token is required, made up below", style="yellow")
    except (CliError, StepgraphError) as exc:
        if opened is not None:
            opened.close()
        if stop_exporting is not None:
            stop_exporting()
        raise _fail(str(exc)) from None
    try:
        serve_forever(
            served,
            opened,
            host=host,
            port=port,
            token=token,
            say=lambda s: say(out, s),
            listening=listening,
        )
    finally:
        try:
            opened.close()
        finally:
            if stop_exporting is not None:
                # (once the runs the server stopped have ended their spans: they go too)
                stop_exporting()


def _fail(message: str) -> typer.Exit:
    say(err, f"error: {message}", style="red")
    return typer.Exit(1)


def _summary(factory: object) -> str:
    """The first paragraph of the function's docstring, on one line."""
    doc = inspect.getdoc(factory) if factory is not None else None
    first = (doc or "").split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")
