"""The HTTP API and the console's files, as a Starlette app.

Every route answers JSON; a refusal is ``{"error": message}`` with a 4xx
status naming what is wrong, a store that fails (its database down) a 503
with the store's message, and a failure of ours is a 500 whose details go
to the server log, never to the client. The API's guards sit in one ASGI
middleware (:class:`Guard`) in front of everything:

- a token, when one is set, on every ``/api/`` call and event stream
  (``Authorization: Bearer``, compared in constant time);
- without a token (loopback only), requests must name a loopback host, so a
  web page that rebinds its own name to 127.0.0.1 reaches nothing;
- a POST must send at most ``max_body`` bytes, as ``application/json``
  (checked where each POST reads its body, after routing) — which a page
  from another origin cannot send without a preflight this server never
  grants.

Run events stream as Server-Sent Events: ``id: n`` and ``data: {json}`` per
event; a client that reconnects with ``Last-Event-ID: n`` gets the events
after ``n``. When the run is not going on (any more) the stream sends
``event: end`` with the run's status and closes. A run's log keeps its
newest events only (see :mod:`._logs`): a stream asking for events it
dropped gets ``event: dropped`` first, saying how many and from which id
the rest follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._cli._load import json_value
from .._core import lone_surrogate_at, quoted
from .._exceptions import (
    CheckpointDecodeError,
    CheckpointError,
    CheckpointIntegrityError,
    CheckpointMismatchError,
)
from ._describe import CHECKPOINTS_MAX, CHECKPOINTS_SHOWN, OUTPUTS_MAX, OUTPUTS_SHOWN
from ._logs import json_text
from ._openapi import openapi
from ._refusals import Problem, refusal
from ._runs import RunService

__all__ = ["Guard", "create_app"]

log = logging.getLogger("stepgraph.serve")

KEEPALIVE = 15.0  # seconds between comments on a quiet event stream


def _loopback_name(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1) — never
    another name, which a page elsewhere could point at this machine (DNS
    rebinding)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


# The console is static files in the package: index.html (served at "/"), a
# style sheet, and its script as native ES modules under static/js/ (no build
# step). A module must come as JavaScript (browsers refuse another type,
# given nosniff); "no-cache" has a page ask again for each, so a reload after
# an upgrade never mixes modules of two versions.
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class JSONBody(JSONResponse):
    """A JSON response that never fails to encode (see ``json_text``)."""

    def render(self, content: Any) -> bytes:
        return json_text(content, (",", ":")).encode("utf-8")


def _error(status: int, message: str) -> JSONBody:
    return JSONBody({"error": message}, status_code=status)


class Guard:
    """Token, host and body size checks (see the module doc)."""

    def __init__(self, app: ASGIApp, *, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            receive = self._limited(receive)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, bytes]) -> Response | None:
        path: str = scope["path"]
        if self.token is None:
            host = headers.get("host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if not _loopback_name(name):
                return _error(403, f"host {host!r} refused: a server without a token answers "
                                   "loopback names only")  # fmt: skip
        if self.token is not None and path.startswith("/api/"):
            given = headers.get("authorization", b"")
            scheme, _, value = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), self.token):
                if not given:
                    message = "a token is needed: send Authorization: Bearer <token>"
                elif scheme.lower() != b"bearer":  # (Basic: not a wrong token, a wrong scheme)
                    shown = quoted(scheme.decode("latin-1"))
                    message = f"send the token as Authorization: Bearer <token>, not {shown}"
                else:
                    message = "this token is not the server's"
                response = _error(401, message)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return _error(413, f"the body is over {self.max_body} bytes")
        return None

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _TooLarge
            return message

        return limited


class _TooLarge(Exception):
    pass


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true or false",
               int: "a number", float: "a number", type(None): "null"}  # fmt: skip


async def _body(request: Request, *fields: str) -> dict[str, Any]:
    """The request's JSON object, holding none but ``fields``. Every POST
    reads its body here, so every POST must be JSON: a page of another
    origin cannot send that without a preflight, which this server never
    grants. A field the call does not take is refused, naming it: a
    misspelt ``checkpoint_id`` would otherwise resume from the latest."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Problem(415, "send the body as JSON (Content-Type: application/json)")
    try:
        raw = await request.body()
    except _TooLarge:
        raise Problem(413, "the body is too large") from None
    try:
        text = raw.decode("utf-8-sig") or "{}"  # (json.loads would guess UTF-16 or UTF-32)
    except UnicodeDecodeError as exc:
        message = f"the body is not UTF-8 text (byte {exc.start} cannot be read)"
        raise Problem(400, message) from None
    try:
        body = json_value(text)
    except (ValueError, RecursionError) as exc:  # (bad JSON, NaN, 1e999, a 5,000-digit number)
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Problem(422, f"the body must be a JSON object, not {_JSON_TYPES[type(body)]}")
    unknown = next((key for key in body if key not in fields), None)
    if unknown is not None:
        takes = " and ".join(repr(field) for field in fields) if fields else "no field"
        message = f"the body has an unknown field {quoted(unknown)}: this call takes {takes}"
        raise Problem(422, message)
    return body


def create_app(
    service: RunService,
    *,
    token: str | None = None,
    max_body: int = 1 << 20,
    lifespan: Any = None,
) -> ASGIApp:
    """The API and console over ``service``; guarded (see :class:`Guard`).
    ``lifespan``: Starlette's (the server stops its runs in it)."""

    def api(
        handler: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Problem as problem:
                return _error(problem.status, problem.message)
            except ClientDisconnect:  # (gone before its whole body came: no one to answer)
                log.debug("%s %s: the client went away mid-body", request.method, request.url.path)
                return _error(400, "the client went away before sending the whole body")
            except (
                CheckpointIntegrityError,
                CheckpointMismatchError,
                CheckpointDecodeError,
            ) as exc:
                # Stored data this server cannot verify: unsigned or signed
                # with another secret (STEPGRAPH_SECRET), or damaged -- or
                # cannot read: written by another graph of the workflow, or
                # holding types it does not know (another server on the
                # store serves another version of it). The record is the
                # problem, not the server: say which.
                log.warning("%s %s: %s", request.method, request.url.path, exc)
                return _error(409, refusal(exc).message)
            except Exception as exc:
                if type(exc) is CheckpointError:  # (not damaged data and the like: ours)
                    # The store failed (its database down, its disk full): the
                    # client may try again; its message names no password.
                    log.warning("%s %s: %s", request.method, request.url.path, exc)
                    return _error(503, str(exc))
                log.exception("%s %s failed", request.method, request.url.path)
                return _error(500, "the server failed on this request (see the server's log)")

        return guarded

    async def workflows(request: Request) -> Response:
        return JSONBody(service.describe_workflows())

    async def start(request: Request) -> Response:
        body = await _body(request, "input")
        if "input" not in body:
            raise Problem(422, 'no input: send {"input": ...}')
        run_id = await service.start(request.path_params["name"], body["input"])
        return JSONBody({"run_id": run_id}, status_code=201)

    async def runs(request: Request) -> Response:
        query = request.query_params
        limit = _number(request, "limit", 50, 1, 500)
        return JSONBody(
            await service.list_runs(
                query.get("workflow") or None,
                query.get("status") or None,
                query.get("cursor") or None,
                limit,
            )
        )

    async def run(request: Request) -> Response:
        checkpoints = _number(request, "checkpoints", CHECKPOINTS_SHOWN, 1, CHECKPOINTS_MAX)
        return JSONBody(await service.describe_run(request.path_params["run_id"], checkpoints))

    async def outputs(request: Request) -> Response:
        offset = _number(request, "offset", 0, 0)
        limit = _number(request, "limit", OUTPUTS_SHOWN, 1, OUTPUTS_MAX)
        return JSONBody(await service.outputs_page(request.path_params["run_id"], offset, limit))

    async def respond(request: Request) -> Response:
        body = await _body(request, "responses")
        answers = body.get("responses")
        if not isinstance(answers, dict):
            raise Problem(422, 'send {"responses": {request_id: value, ...}}')
        for request_id in answers:
            _storable_id(request_id, "a request id")
        run_id = await service.respond(request.path_params["run_id"], answers)
        return JSONBody({"run_id": run_id}, status_code=202)

    async def cancel(request: Request) -> Response:
        await _body(request)  # (JSON, as every POST)
        run_id = request.path_params["run_id"]
        await service.cancel(run_id)
        return JSONBody({"run_id": run_id}, status_code=202)

    async def resume(request: Request) -> Response:
        body = await _body(request, "checkpoint_id")
        checkpoint = _checkpoint_id(body, required=False)
        run_id = await service.resume(request.path_params["run_id"], checkpoint, fork=False)
        return JSONBody({"run_id": run_id}, status_code=202)

    async def fork(request: Request) -> Response:
        body = await _body(request, "checkpoint_id")
        checkpoint = _checkpoint_id(body, required=True)
        run_id = await service.resume(request.path_params["run_id"], checkpoint, fork=True)
        return JSONBody({"run_id": run_id}, status_code=201)

    async def events(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        last = request.headers.get("last-event-id") or "0"
        if not (last.isascii() and last.isdigit() and len(last) <= 20):
            # (headers arrive as latin-1: a client sending UTF-8 means that)
            with contextlib.suppress(UnicodeError):
                last = last.encode("latin-1").decode("utf-8")
            shown = last if len(last) <= 40 else last[:37] + "..."
            raise Problem(422, f"Last-Event-ID must be an event id (a number), got {shown!r}")
        status = await service.stream_status(run_id)
        run_log = service.log_of(run_id)
        followed = run_log is not None and run_log.live
        return StreamingResponse(
            _stream(service, run_id, int(last), status, followed),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def schema(request: Request) -> Response:
        return JSONBody(openapi())

    async def page(request: Request) -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8",
                        headers=_PAGE_HEADERS)  # fmt: skip

    static_files = _static_files()

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in static_files:
            raise Problem(404, f"no file {quoted(name)}")
        return Response(_asset(name), media_type=static_files[name], headers=_PAGE_HEADERS)

    routes = [
        Route("/", api(page)),
        Route("/static/{name:path}", api(static)),
        Route("/openapi.json", api(schema)),
        Route("/api/workflows", api(workflows)),
        Route("/api/workflows/{name}/runs", api(start), methods=["POST"]),
        Route("/api/runs", api(runs)),
        Route("/api/runs/{run_id}", api(run)),
        Route("/api/runs/{run_id}/events", api(events)),
        Route("/api/runs/{run_id}/outputs", api(outputs)),
        Route("/api/runs/{run_id}/responses", api(respond), methods=["POST"]),
        Route("/api/runs/{run_id}/cancel", api(cancel), methods=["POST"]),
        Route("/api/runs/{run_id}/resume", api(resume), methods=["POST"]),
        Route("/api/runs/{run_id}/fork", api(fork), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: _not_found, 405: _not_allowed},
        lifespan=lifespan,
    )
    return Guard(app, token=token, max_body=max_body)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(404, f"no such route: {request.method} {quoted(request.url.path)}")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error(405, f"{request.method} is not allowed on {quoted(request.url.path)}")


def _checkpoint_id(body: dict[str, Any], *, required: bool) -> str | None:
    value = body.get("checkpoint_id")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise Problem(422, 'send {"checkpoint_id": "<a checkpoint id of the run>"}')
    return _storable_id(value, "checkpoint_id")


def _storable_id(value: str, what: str) -> str:
    """``value``, an id a body names, unless it holds a lone surrogate (JSON
    can write one, "\\ud800"): no store holds such an id (UTF-8 cannot),
    and the database driver would fail on it rather than find nothing."""
    at = lone_surrogate_at(value)
    if at is not None:
        raise Problem(
            422,
            f"{what} {quoted(value)} holds a lone surrogate "
            f"({value[at]!r} at index {at}): no id in the store does",
        )
    return value


def _asset(name: str) -> bytes:
    """A file under static/, by its path there (``"js/main.js"``)."""
    return resources.files(__package__).joinpath("static", *name.split("/")).read_bytes()


def _static_files() -> dict[str, str]:
    """What ``/static/`` serves: each script and style sheet under static/
    (by its path there, ``"js/main.js"``) with its media type; nothing else."""
    found: dict[str, str] = {}
    folders = [(resources.files(__package__).joinpath("static"), "")]
    while folders:
        folder, prefix = folders.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                folders.append((entry, f"{prefix}{entry.name}/"))
            elif (kind := _MEDIA_TYPES.get(entry.name[entry.name.rfind(".") :])) is not None:
                found[prefix + entry.name] = kind
    return found


def _number(request: Request, name: str, default: int, least: int, most: int | None = None) -> int:
    """Query parameter ``name``, a whole number from ``least`` to ``most``
    (``None``: no limit), ``default`` when not given; else a 422 naming it."""
    given = request.query_params.get(name, str(default))
    try:
        number = int(given)
    except ValueError:
        raise Problem(422, f"{name} must be an integer, got {quoted(given)}") from None
    if number < least or (most is not None and number > most):
        within = f"from {least} to {most}" if most is not None else f"at least {least}"
        raise Problem(422, f"{name} must be {within}, got {number}")
    return number


def _dropped(missed: int, after: int, resumes_at: int) -> str:
    """What a stream says of the events after ``after`` that its run's log
    dropped (it keeps a run's newest events only): how many, and the id the
    events it goes on with begin at. Its own id is the one before that, so
    a client that reconnects after it is not told again."""
    said = {"dropped": missed, "after": after, "resumes_at": resumes_at}
    return f"event: dropped\nid: {resumes_at - 1}\ndata: {json.dumps(said)}\n\n"


async def _stream(
    service: RunService, run_id: str, after: int, status: str, followed: bool
) -> AsyncIterator[str]:
    """The run's events after ``after``, live until the run stops here.
    It ends with ``status`` — how the run stands, as its details say — or,
    once the run was ``followed`` going on here, with how it ended here
    (the log of a run this server ran earlier ends where the server left
    it, which another process may have gone on from since)."""
    seen = after
    while True:
        run_log = service.log_of(run_id)
        if run_log is not None:
            new = run_log.after(seen)
            missed = run_log.missed(seen)
            if new:  # all that is new in one write
                said = _dropped(missed, seen, new[0][0]) if missed else ""
                yield said + "".join(f"id: {n}\ndata: {r}\n\n" for n, r in new)
                seen = new[-1][0]
            followed = followed or run_log.live
            if followed:
                status = run_log.status
            if run_log.live and not service.streams_over.is_set():
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        await run_log.wait(seen)  # (woken by the server stopping too)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                continue
        yield f"event: end\ndata: {json.dumps({'status': status})}\n\n"
        return
