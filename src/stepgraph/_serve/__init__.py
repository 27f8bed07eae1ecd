"""``stepgraph serve``: an HTTP API and a web console over the checkpoint
store the CLI uses (extra ``stepgraph[serve]``: Starlette and uvicorn).

- ``_runs``: the run service — starts, continues, cancels runs; keeps events;
- ``_describe``: runs and workflows as the API describes them;
- ``_shutdown``: stopping every run when the server stops (interrupted);
- ``_served``: the workflows named on the command line;
- ``_logs``: one run's events, numbered for ``Last-Event-ID``;
- ``_refusals``: how the server refuses what it cannot do (``Problem``);
- ``_http``: routes, guards (token, host, body), Server-Sent Events;
- ``_openapi``: the API's description; ``_schema``: JSON schemas of types;
- ``_server``: uvicorn, and stopping runs cleanly on Ctrl-C / SIGTERM;
- ``static/``: the console (plain HTML, CSS and JavaScript; no build step).

The server runs only the workflows named on its command line; nothing in a
request names a module to import.
"""

from __future__ import annotations

from ._http import create_app
from ._refusals import Problem
from ._runs import RunService
from ._served import ServedWorkflow, unroutable
from ._server import bind, console_address, is_loopback, serve
from ._shutdown import INTERRUPTED

__all__ = [
    "INTERRUPTED",
    "Problem",
    "RunService",
    "ServedWorkflow",
    "bind",
    "console_address",
    "create_app",
    "is_loopback",
    "serve",
    "unroutable",
]
