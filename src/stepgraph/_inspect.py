"""Looking inside a checkpoint, and forking an edited one.

``Workflow.get_state(id)`` decodes a checkpoint with the safe codec — shared
state, the messages waiting for the next superstep, open requests, executor
snapshots — without touching any executor. ``Workflow.update_state(id, ...)``
writes a *new* checkpoint whose parent is the one edited (the original is
never changed): going on from it is a fork with lineage, like resuming from
an older checkpoint. Edits are checked against the graph before anything is
written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._checkpoint import Checkpoint, CheckpointStore, going_on_from
from ._core import (
    MessageTypeError,
    PendingRequest,
    Response,
    RunState,
    a_string,
    a_type,
    a_value_type,
    to_the_end,
)
from ._exceptions import CheckpointError, RequestError
from ._persistence import RunCodec, body_refs
from ._prepare import CHECKPOINT_ID
from ._recorder import new_checkpoint_id, take_run

if TYPE_CHECKING:
    from ._workflow import Workflow

__all__ = ["StateSnapshot", "get_state", "update_state"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StateSnapshot:
    """What a checkpoint holds, decoded. ``messages`` are the messages waiting
    for each executor in the next superstep (its inbox, in order);
    ``answers`` the responses delivered with them, by request id;
    ``fan_in`` what each fan-in holds, by its label and source."""

    checkpoint_id: str
    run_id: str
    workflow: str
    superstep: int
    status: str
    parent_id: str | None
    created_at: float
    state: dict[str, Any] = field(default_factory=dict)
    messages: dict[str, list[Any]] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    requests: list[PendingRequest] = field(default_factory=list)
    snapshots: dict[str, Any] = field(default_factory=dict)
    fan_in: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    kind = "state_snapshot"


async def get_state(
    workflow: Workflow, store: CheckpointStore, checkpoint_id: str
) -> StateSnapshot:
    a_string(checkpoint_id, CHECKPOINT_ID, CheckpointError)
    stored = await store.load(checkpoint_id)
    run, snapshots = workflow.codec.decode(stored)
    edges = workflow.graph.edges
    return StateSnapshot(
        checkpoint_id=stored.id,
        run_id=stored.run_id,
        workflow=stored.workflow,
        superstep=stored.superstep,
        status=stored.status,
        parent_id=stored.parent_id,
        created_at=stored.created_at,
        state=run.state,
        messages={
            eid: [m for _, m in inbox if type(m) is not Response]
            for eid, inbox in run.inboxes.items()
        },
        answers={
            m.request.request_id: m.value
            for inbox in run.inboxes.values()
            for _, m in inbox
            if type(m) is Response
        },
        requests=list(run.requests.values()),
        snapshots=snapshots,
        fan_in={edges[index].label(): buffer for index, buffer in run.fan_in.items()},
    )


async def update_state(
    workflow: Workflow,
    store: CheckpointStore,
    checkpoint_id: str,
    *,
    state: Mapping[str, Any] | None,
    messages: Mapping[str, Iterable[Any]] | None,
    drop_requests: Iterable[str],
) -> str:
    a_string(checkpoint_id, CHECKPOINT_ID, CheckpointError)
    for name, edits in (("state", state), ("messages", messages)):
        if edits is not None and not isinstance(edits, Mapping):
            what = "keys to values" if name == "state" else "executor ids to lists of messages"
            raise TypeError(
                f"update_state: {name}= maps {what}, not {a_value_type(edits)}: pass a dict"
            )
    if isinstance(drop_requests, (str, bytes)) or not isinstance(drop_requests, Iterable):
        raise TypeError(
            f"update_state: drop_requests= takes a list of request ids, not "
            f"{a_value_type(drop_requests)} (to drop one request, pass [request_id])"
        )
    drop_requests = list(drop_requests)
    for request_id in drop_requests:
        a_string(
            request_id, "update_state: drop_requests= lists request ids, strings", RequestError
        )
    stored = await store.load(checkpoint_id)
    going_on_from(store, stored)
    codec = workflow.codec
    run, snapshots = codec.decode(stored)
    written: set[str] = set()
    for key, value in (state or {}).items():
        a_string(key, "update_state: state= maps keys, which are strings, to values")
        run.state[key] = value
        written.add(key)
    nodes = workflow.graph.nodes
    for eid, new in (messages or {}).items():
        node = nodes.get(eid)
        if node is None:
            raise MessageTypeError(
                f"update_state: {eid!r} is not an executor of workflow {workflow.name!r} "
                f"(known: {sorted(nodes)})"
            )
        if isinstance(new, (str, bytes)) or not isinstance(new, Iterable):
            raise TypeError(
                f"update_state: messages for {eid!r} must be a list of messages, not "
                f"{a_type(type(new))} (to queue one message, pass [message])"
            )
        new = list(new)
        for message in new:
            if message is None:
                raise MessageTypeError(
                    f"update_state: a message for {eid!r} is None; None is never a message",
                    executor_id=eid,
                )
            if not node.accepts(message):
                raise MessageTypeError(
                    f"update_state: executor {eid!r} has no handler for {a_value_type(message)}",
                    executor_id=eid,
                )
        answers = [(s, m) for s, m in run.inboxes.get(eid, ()) if type(m) is Response]
        inbox = answers + [("", m) for m in new]
        if inbox:
            run.inboxes[eid] = inbox
        else:
            run.inboxes.pop(eid, None)
    changed: dict[str, Any] = {}  # the snapshots the drops changed
    for request_id in drop_requests:
        request = run.requests.pop(request_id, None)
        if request is None:
            raise RequestError(
                f"update_state: request {request_id!r} is not open at checkpoint {stored.id} "
                f"(open: {sorted(run.requests)})"
            )
        # Its executor forgets it too (a sub-workflow: the child run waiting for it).
        eid = request.executor_id
        if eid in snapshots:
            workflow.executors[eid]._withdraw(snapshots[eid], request_id)
            changed[eid] = snapshots[eid]
    # Written as a continuation of the run: not while it goes on elsewhere.
    holder = await take_run(store, stored.run_id, stored)
    try:
        return await _fork(stored, run, written, store, codec, changed)
    finally:
        await to_the_end(store.release(stored.run_id, holder))


async def _fork(
    stored: Checkpoint,
    run: RunState,
    written: set[str],
    store: CheckpointStore,
    codec: RunCodec,
    changed: Mapping[str, Any],
) -> str:
    """Write the edited state as a new checkpoint, child of ``stored``; the
    snapshots are carried over as stored but the ``changed`` ones, encoded
    now with the edited values."""
    hashes = codec.hashes(stored)
    snapshots = dict(stored.body.get("snapshots", {}))
    parts = dict(stored.body.get("parts") or {})
    encoded: dict[str, bytes] = {}
    for eid, snapshot in changed.items():
        h, data, held = codec.encode_snapshot(eid, snapshot)
        snapshots[eid], encoded[h] = h, data
        encoded.update(held)
        parts.pop(eid, None)
        if held:
            parts[eid] = sorted(held)
    body, blobs = codec.body(run, hashes, written, snapshots=snapshots, parts=parts)
    blobs.update(encoded)
    refs = body_refs(body)
    run.superstep = stored.superstep
    fresh = {h: b for h, b in blobs.items() if h in refs}
    checkpoint = codec.checkpoint(
        run, body, refs, fresh, id=new_checkpoint_id(), run_id=stored.run_id, parent=stored.id
    )
    await store.save(checkpoint)
    return checkpoint.id
