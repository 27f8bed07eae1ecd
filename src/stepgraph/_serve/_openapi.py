"""The API's OpenAPI 3.1 description, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ._describe import CHECKPOINTS_MAX, CHECKPOINTS_SHOWN, OUTPUTS_MAX, OUTPUTS_SHOWN

__all__ = ["openapi"]

_ERROR = {
    "description": "refused",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """A POST's body: an object of these fields and no other (422 names one)."""
    schema = {**schema, "additionalProperties": False}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
_RUN_REF = {"type": "object", "required": ["run_id"], "properties": {"run_id": {"type": "string"}}}
_ERRORS = {code: _ERROR for code in ("401", "404", "409", "413", "415", "422")}


def _post(summary: str, body: dict[str, Any] | None, status: str, *codes: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [_RUN_ID],
        "responses": {status: _json(_RUN_REF), **{c: _ERRORS[c] for c in ("401", *codes)}},
    }
    if body is not None:
        operation["requestBody"] = _body(body)
    return {"post": operation}


def openapi() -> dict[str, Any]:
    schemas = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "what is wrong, by name"}},
        },
        "Workflow": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "input_schema": {"type": "object", "description": "JSON schema of the input"},
                "graph": {
                    "type": "object",
                    "properties": {
                        "nodes": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "label": {"type": "string"},
                                    "kind": {"enum": ["executor", "subworkflow", "map"]},
                                    "start": {"type": "boolean"},
                                },
                            },
                        },
                        "edges": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "source": {"type": "string"},
                                    "target": {"type": "string"},
                                    "label": {"type": "string"},
                                    "style": {"enum": ["solid", "dotted", "thick"]},
                                },
                            },
                        },
                    },
                },
            },
        },
        "RunSummary": {
            "type": "object",
            "properties": {
                "run_id": {"type": "string"},
                "workflow": {"type": "string"},
                "status": {"type": "string"},
                "error": {
                    "type": ["string", "null"],
                    "description": "why a failed run failed, or why a cancelled one stopped "
                    "(who asked: 'cancelled on request: ...', the server stopping: "
                    "'interrupted: ...', or its process: 'cancelled by the process running "
                    "it ...'); else null",
                },
                "started_at": {"type": "number"},
                "updated_at": {"type": "number"},
                "supersteps": {"type": "integer"},
                "pending_requests": {"type": "integer"},
                "checkpoints": {"type": "integer"},
                "live": {"type": "boolean", "description": "going on in this server now"},
                "interrupted": {"type": "boolean", "description": "stopped by a shutdown"},
            },
        },
        "Run": {
            "allOf": [
                _ref("RunSummary"),
                {
                    "type": "object",
                    "properties": {
                        "outputs": {
                            "type": "array",
                            "description": f"the run's newest outputs, oldest first: at most "
                            f"{OUTPUTS_SHOWN} of them (the rest: GET /api/runs/{{run_id}}/outputs)",
                        },
                        "outputs_total": {
                            "type": "integer",
                            "description": "how many outputs the run has (more than `outputs` "
                            "holds when older ones were left out)",
                        },
                        "outputs_dropped": {
                            "type": "integer",
                            "description": "how many of the oldest of them no one holds any "
                            "more: a run this server shows from its memory (its store holds "
                            "none of it, or cannot give outputs back) keeps its newest only",
                        },
                        "checkpoints": {
                            "type": "array",
                            "description": "the run's newest checkpoints, oldest first: at "
                            "most the `checkpoints` query parameter's count (100 by default)",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "checkpoint_id": {"type": "string"},
                                    "superstep": {"type": "integer"},
                                    "created_at": {"type": "number"},
                                    "status": {"type": "string"},
                                    "parent_id": {"type": ["string", "null"]},
                                },
                            },
                        },
                        "events_kept": {
                            "type": "boolean",
                            "description": "whether this server holds the run's event log",
                        },
                        "events_dropped": {
                            "type": "integer",
                            "description": "how many of the run's oldest events that log "
                            "dropped (it keeps a run's newest events only)",
                        },
                        "failure": {
                            "type": ["object", "null"],
                            "description": "for a run a handler's failure ended, which "
                            "executor of its graph failed and in which superstep (read from "
                            "its error; for a failure inside a sub-workflow, the node that "
                            "ran it); else null",
                            "properties": {
                                "executor_id": {"type": "string"},
                                "superstep": {"type": "integer"},
                            },
                        },
                        "checkpoints_total": {
                            "type": "integer",
                            "description": "how many checkpoints the run has (more than "
                            "`checkpoints` holds when older ones were left out)",
                        },
                        "pending_requests": {
                            "type": "array",
                            "description": "the requests the run waits for; for a run of a "
                            "workflow this server does not serve (`served` false), as its "
                            "checkpoint stores them: `request` as tagged JSON, the types by "
                            "their stored names, `response_schema` null",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "request_id": {"type": "string"},
                                    "executor_id": {"type": "string"},
                                    "request": {},
                                    "request_type": {"type": ["string", "null"]},
                                    "response_type": {"type": "string"},
                                    "response_schema": {"type": ["object", "null"]},
                                },
                            },
                        },
                        "served": {
                            "type": "boolean",
                            "description": "whether this server serves the run's workflow; "
                            "if not (another server or process started it on the same store), "
                            "the run is shown but answered, resumed or forked where it is "
                            "served",
                        },
                    },
                },
            ]
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "stepgraph serve", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": {
            "/api/workflows": {
                "get": {
                    "summary": "The workflows served, with input schemas and graphs",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Workflow")}),
                        "401": _ERROR,
                    },
                }
            },
            "/api/workflows/{name}/runs": {
                "post": {
                    "summary": "Start a run; its id comes back at once",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": _body(
                        {"type": "object", "required": ["input"], "properties": {"input": {}}}
                    ),
                    "responses": {
                        "201": _json(_RUN_REF, "started"),
                        **{c: _ERRORS[c] for c in ("401", "404", "409", "413", "415", "422")},
                    },
                }
            },
            "/api/runs": {
                "get": {
                    "summary": "Runs in the store, newest first, a page at a time",
                    "parameters": [
                        {"name": n, "in": "query", "required": False, "schema": {"type": t}}
                        for n, t in (
                            ("workflow", "string"),
                            ("status", "string"),
                            ("cursor", "string"),
                            ("limit", "integer"),
                        )
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "runs": {"type": "array", "items": _ref("RunSummary")},
                                    "next": {"type": ["string", "null"]},
                                },
                            }
                        ),
                        "401": _ERROR,
                        "422": _ERROR,
                    },
                }
            },
            "/api/runs/{run_id}": {
                "get": {
                    "summary": "One run: status, outputs, its newest checkpoints, open requests",
                    "parameters": [
                        _RUN_ID,
                        {
                            "name": "checkpoints",
                            "in": "query",
                            "required": False,
                            "description": "how many of the run's newest checkpoints to "
                            f"include (default {CHECKPOINTS_SHOWN}); 422 outside 1 to "
                            f"{CHECKPOINTS_MAX}",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": CHECKPOINTS_MAX,
                                "default": CHECKPOINTS_SHOWN,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("Run")),
                        "401": _ERROR,
                        "404": _ERROR,
                        "422": _ERROR,
                    },
                }
            },
            "/api/runs/{run_id}/outputs": {
                "get": {
                    "summary": "A page of the run's outputs, oldest first, as its details "
                    "count them (`outputs_total`): `limit` of them from the `offset`-th (from "
                    "0); those no one holds any more (`dropped`, the oldest) are left out, and "
                    "the page's `offset` says where it begins",
                    "parameters": [
                        _RUN_ID,
                        {
                            "name": "offset",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": f"422 outside 1 to {OUTPUTS_MAX}",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": OUTPUTS_MAX,
                                "default": OUTPUTS_SHOWN,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "outputs": {"type": "array"},
                                    "offset": {"type": "integer"},
                                    "total": {"type": "integer"},
                                    "dropped": {"type": "integer"},
                                },
                            }
                        ),
                        "401": _ERROR,
                        "404": _ERROR,
                        "422": _ERROR,
                    },
                }
            },
            "/api/runs/{run_id}/events": {
                "get": {
                    "summary": "The run's events as Server-Sent Events (id: n, data: JSON with "
                    "kind); reconnect with Last-Event-ID to get the events after n; `event: "
                    "end` when the run is not going on. The server keeps a run's newest events "
                    "only: a stream asking for dropped ones first gets `event: dropped` with "
                    "{dropped, after, resumes_at} (how many after `after` are gone; the rest "
                    "begin at `resumes_at`)",
                    "parameters": [
                        _RUN_ID,
                        {
                            "name": "Last-Event-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "events",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "401": _ERROR,
                        "404": _ERROR,
                    },
                }
            },
            "/api/runs/{run_id}/responses": _post(
                "Answer open requests and continue the run; 409 if one was answered already "
                "(naming the checkpoint that recorded it) or the run is still running",
                {
                    "type": "object",
                    "required": ["responses"],
                    "properties": {"responses": {"type": "object"}},
                },
                "202",
                "404",
                "409",
                "413",
                "415",
                "422",
            ),
            "/api/runs/{run_id}/cancel": _post("Cancel the run", None, "202", "404", "409"),
            "/api/runs/{run_id}/resume": _post(
                "Go on with a stopped run (from its latest checkpoint or the one given); 409 if "
                "it is running, or if nothing would run from there: idle there (fork it, or "
                "start a new run), or waiting for answers there (answer them, or fork)",
                {"type": "object", "properties": {"checkpoint_id": {"type": "string"}}},
                "202",
                "404",
                "409",
                "422",
            ),
            "/api/runs/{run_id}/fork": _post(
                "A new run from one of this run's checkpoints",
                {
                    "type": "object",
                    "required": ["checkpoint_id"],
                    "properties": {"checkpoint_id": {"type": "string"}},
                },
                "201",
                "404",
                "409",
                "422",
            ),
        },
    }
    # What any call may also answer: 503 when the store fails (its database
    # down); a POST, 400 for a body that is not JSON, 413 past the size
    # limit, 415 for another content type; the event stream, 422 for a
    # Last-Event-ID that is not an event id.
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            extra = ["503"] + (["400", "413", "415"] if method == "post" else [])
            if path.endswith("/events"):
                extra.append("422")
            for code in extra:
                operation["responses"].setdefault(code, _ERROR)
    return document
