"""Checkpointing a run: RunState <-> Checkpoint (the codec of a workflow's
runs, its graph signature, and how answers go in); the barrier hook that
writes them is in ``_recorder``.

The per-barrier cost follows what changed: a state value is encoded only when
a superstep wrote its key (unchanged keys keep their content hash), and a
value already stored is not sent to the store again. Executor snapshots are
taken only from executors that override ``snapshot()``; the ``SnapshotPart``s
a snapshot holds are values of their own (``body["parts"]``: executor ->
their hashes), stored once however many checkpoints hold them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import astuple, dataclass
from functools import partial
from typing import Any, Literal

from ._checkpoint import (
    Checkpoint,
    CheckpointStore,
    SnapshotPart,
    TypeRegistry,
    blob_hash,
    collecting_parts,
    dumps,
    encode,
    loads,
    reading_parts,
    type_key,
)
from ._checkpoint import decode as decode_value
from ._core import DirectEdge as _DirectEdge
from ._core import (
    EdgeGroup,
    Graph,
    MultiSelectEdge,
    PendingRequest,
    Response,
    RunState,
    RunStatus,
    SwitchEdge,
    TypeSpec,
    Usage,
    a_type,
    jsonable,
    quoted,
)
from ._exceptions import (
    CheckpointDecodeError,
    CheckpointEncodeError,
    CheckpointError,
    CheckpointMismatchError,
    RequestError,
    ResponseValueError,
)
from ._executor import Executor, refusal
from ._factories import make_executor

__all__ = [
    "CheckpointConfig",
    "Durability",
    "RunCodec",
    "apply_responses",
    "asker",
    "body_refs",
    "graph_signature",
]

Durability = Literal["sync", "async"]
FORMAT = 1


@dataclass(frozen=True, slots=True)
class CheckpointConfig:
    """Where and how a run checkpoints.

    ``durability="sync"``: each checkpoint is written before the next superstep
    starts. ``"async"``: writes overlap the following supersteps (consecutive
    checkpoints may share one transaction) and are all flushed before the run
    returns, fails or is cancelled.
    """

    store: CheckpointStore
    durability: Durability = "sync"

    def __post_init__(self) -> None:
        if self.durability not in ("sync", "async"):
            raise ValueError(f"durability must be 'sync' or 'async', not {self.durability!r}")
        if not isinstance(self.store, CheckpointStore):
            raise TypeError(f"{self.store!r} is not a CheckpointStore")


def _identity(fn: object) -> str:
    if fn is None:
        return ""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def _edge_description(edge: EdgeGroup) -> list[Any]:
    extra: list[Any] = []
    if type(edge) is _DirectEdge:
        extra = [_identity(edge.condition)]
    elif type(edge) is SwitchEdge:
        extra = [[_identity(p), t] for p, t in edge.cases] + [edge.default]
    elif type(edge) is MultiSelectEdge:
        extra = [_identity(edge.selector)]
    return [edge.kind, list(edge.sources), list(edge.targets), extra]


def graph_signature(
    graph: Graph,
    executors: Mapping[str, Executor],
    reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
) -> str:
    """A hash of the topology, executor types and handler types, edge kinds and
    condition identities, and the state reducers: checkpoints only resume on a
    graph with the same one."""
    described: dict[str, Any] = {
        "start": graph.start,
        "executors": [[eid, executor_identity(ex)] for eid, ex in executors.items()],
        "edges": [_edge_description(e) for e in graph.edges],
    }
    if reducers:  # (absent when there are none: signatures of older graphs stay valid)
        described["reducers"] = sorted([key, _identity(fn)] for key, fn in reducers.items())
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def executor_identity(executor: Executor) -> list[Any]:
    func = getattr(executor, "func", None)
    kind = _identity(func) if func is not None else type_key(type(executor))
    nested = getattr(executor, "nested_signature", None)  # a sub-workflow's graph
    return [kind, sorted({type_key(t) for t in executor.declared_types}), nested]


# -- responses ------------------------------------------------------------------


def asker(
    run: RunState, request: PendingRequest, executors: Mapping[str, Executor]
) -> Executor | None:
    """The executor that opened ``request``: the run's own instance of it,
    or the shared one."""
    return run.instances.get(request.executor_id) or executors.get(request.executor_id)


def asked_by(
    run: RunState, request: PendingRequest, executors: Mapping[str, Executor] | None
) -> str:
    """Who opened ``request``, for messages: the executor's id, or, for a
    sub-workflow's request, the path down to the child executor that did."""
    executor = asker(run, request, executors) if executors is not None else None
    path = getattr(executor, "asker_path", None)  # (a WorkflowExecutor's)
    return str(path(request)) if path is not None else request.executor_id


def apply_responses(
    run: RunState, responses: Mapping[str, Any], executors: Mapping[str, Executor] | None = None
) -> None:
    """Validate every response — its type, then what the executor that
    asked says of it (``Executor.check_response``, when ``executors`` are
    given: the run's own instances first) — then deliver all of them (or
    none): each goes to the inbox of the executor that asked, in the order
    requests opened."""
    if not isinstance(responses, Mapping) or not responses:
        raise RequestError("responses must be a non-empty mapping of request id to value")
    for request_id, value in responses.items():
        request = run.requests.get(request_id)
        if request is None:
            if request_id in run.answered:
                raise RequestError(f"request {request_id!r} was already answered")
            open_ids = list(run.requests) or "none"
            raise RequestError(
                f"unknown request id {quoted(request_id)}; open requests: {open_ids}"
            )
        if not TypeSpec(request.response_type).matches(value):
            raise ResponseValueError(
                f"the response to request {request_id!r} (opened by "
                f"{asked_by(run, request, executors)!r}) must be "
                f"{a_type(request.response_type)}, not {a_type(type(value))}",
                executor_id=request.executor_id,
            )
        executor = asker(run, request, executors) if executors is not None else None
        if executor is not None and not executor._takes_response(request, value):
            raise ResponseValueError(
                f"the response to request {request_id!r} (opened by "
                f"{asked_by(run, request, executors)!r}) is {a_type(type(value))}, which "
                f"none of its @response_handler methods takes for "
                f"{a_type(type(request.request))}",
                executor_id=request.executor_id,
            )
        refused = None if executor is None else refusal(executor, "check_response", request, value)
        if refused is not None:
            raise ResponseValueError(
                f"the response to request {request_id!r} (opened by "
                f"{asked_by(run, request, executors)!r}) is refused: {refused}",
                executor_id=request.executor_id,
            )
    for request_id in [r for r in run.requests if r in responses]:
        request = run.requests.pop(request_id)
        run.answered.add(request_id)
        run.inboxes.setdefault(request.executor_id, []).append(
            ("", Response(request, responses[request_id]))
        )


# -- RunState <-> Checkpoint ---------------------------------------------------------


@contextmanager
def _decoding(label: str) -> Iterator[None]:
    """Stored data of the wrong shape becomes a ``CheckpointDecodeError``."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # (AttributeError: a field of another JSON type than written, e.g.
        # a list where a mapping was stored)
        raise CheckpointDecodeError(f"{label} is malformed: {type(exc).__name__}: {exc}") from exc


def _usage(stored: Any) -> dict[str, Usage]:
    if not isinstance(stored, dict):
        raise TypeError("usage is not a mapping")
    usage = {}
    for path, counts in stored.items():
        if not isinstance(counts, list) or not all(type(n) is int and n >= 0 for n in counts):
            raise ValueError(f"usage of {path!r} is not a list of token counts")
        usage[path] = Usage(*counts)
    return usage


def _run_ids(found: Any, label: str) -> tuple[str, ...]:
    if not isinstance(found, list) or not all(isinstance(r, str) for r in found):
        raise CheckpointDecodeError(f"{label}: forked_from is not a list of run ids")
    return tuple(found)


def _part(parts: Mapping[str, bytes], h: str) -> Any:
    return loads(parts[h])


def body_refs(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The value hashes a checkpoint body references, sorted."""
    state, snapshots = body.get("state"), body.get("snapshots")
    if not state and not snapshots:
        return ()
    refs = {*(state or {}).values(), *(snapshots or {}).values()}
    for hashes in body.get("parts", {}).values():
        refs.update(hashes)
    return tuple(sorted(refs))


class RunCodec:
    """Encodes and decodes one workflow's run states."""

    def __init__(
        self,
        *,
        workflow: str,
        signature: str,
        registry: TypeRegistry,
        executors: Mapping[str, Executor],
        factories: Mapping[str, Callable[[], Executor]] | None = None,
    ) -> None:
        self.workflow = workflow
        self.signature = signature
        self.registry = registry
        self.executors = executors
        self.factories = dict(factories or {})
        # Shared instances snapshot themselves; a per-run one, its run's instance.
        self._snapshotting = {
            eid: ex
            for eid, ex in executors.items()
            if ex.takes_snapshots and eid not in self.factories
        }
        self._per_run_snapshots = any(
            executors[eid].takes_snapshots for eid in self.factories if eid in executors
        )

    def _enc(self, value: Any, path: str) -> Any:
        return encode(value, self.registry, path)

    def _blob(self, value: Any, path: str) -> tuple[str, bytes]:
        data = dumps(self._enc(value, path))
        return blob_hash(data), data

    def checkpoint(
        self,
        run: RunState,
        body: dict[str, Any],
        refs: tuple[str, ...],
        blobs: Mapping[str, bytes],
        *,
        id: str,
        run_id: str,
        parent: str | None,
    ) -> Checkpoint:
        """The checkpoint of ``run`` at its superstep, with this body."""
        return Checkpoint(
            id=id,
            run_id=run_id,
            workflow=self.workflow,
            signature=self.signature,
            superstep=run.superstep,
            parent_id=parent,
            created_at=time.time(),
            status=run.status(running=bool(run.inboxes))._value_,  # (not .value: a property)
            pending_requests=len(run.requests),
            body=body,
            refs=refs,
            blobs=blobs,
            request_ids=tuple(run.requests),
        )

    def snapshot_blob(
        self, eid: str, executor: Executor, runs: tuple[str, ...] | None = None
    ) -> tuple[str, bytes, dict[str, bytes]]:
        """The executor's snapshot (for a checkpoint of ``runs``, see
        ``Executor._snapshot_for``), encoded: (hash, bytes, the parts it
        holds by hash)."""
        try:
            snapshot = executor._snapshot_for(runs)
        except Exception as exc:
            raise CheckpointEncodeError(
                f"snapshot of executor {eid!r}: snapshot() raised {type(exc).__name__}: {exc}"
            ) from exc
        return self.encode_snapshot(eid, snapshot)

    def encode_snapshot(self, eid: str, snapshot: Any) -> tuple[str, bytes, dict[str, bytes]]:
        """``snapshot`` of executor ``eid`` encoded: (hash, bytes, the parts
        it holds by hash)."""
        with collecting_parts() as parts:
            h, data = self._blob(snapshot, f"snapshot of executor {eid!r}")
        return h, data, parts

    def inline(self, run: RunState, run_id: str | None = None) -> dict[str, Any]:
        """The whole run state as one value, values inline (used to nest a
        sub-workflow's suspended runs in its parent's checkpoint) — but the
        snapshots' parts, which stay parts of the parent's snapshot. With
        ``run_id`` (the run's), its executors' snapshots are taken for that
        run (as ``body`` does): a nested sub-workflow's, say, hold only the
        child runs that run left waiting."""
        body, blobs = self.body(run, {}, None, run_id=run_id)
        body["state"] = {k: loads(blobs[h]) for k, h in body.get("state", {}).items()}
        body["snapshots"] = {e: loads(blobs[h]) for e, h in body.get("snapshots", {}).items()}
        body["superstep"] = run.superstep
        parts = body.pop("parts", None)
        if parts:
            carried = {}
            for h in {h for hashes in parts.values() for h in hashes}:
                carried[h] = part = SnapshotPart(loads(blobs[h]), raw=True)
                part._stored = (h, blobs[h])  # (encoded already: stored as it is)
            body["part_values"] = carried
        return body

    def from_inline(self, data: dict[str, Any], label: str) -> RunState:
        """Rebuild what :meth:`inline` produced."""
        carried = data.get("part_values") or {}

        def part(h: str) -> Any:
            found = carried[h]
            if not isinstance(found, SnapshotPart):
                raise CheckpointDecodeError(f"{label}: part {h[:12]} is not a stored part")
            return found.value

        with _decoding(label):
            run, snapshots = self._rebuild(
                data, data["superstep"], label, lambda encoded, path: encoded, part
            )
        self._apply(run, snapshots)
        return run

    def body(
        self,
        run: RunState,
        state_hashes: dict[str, str],
        written: set[str] | None,
        snapshots: dict[str, str] | None = None,
        parts: dict[str, list[str]] | None = None,
        run_id: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        """The manifest of ``run`` and the blobs it references that were
        (re-)encoded now. ``state_hashes`` is updated in place. The executors'
        snapshots are taken now, unless ``snapshots`` (their stored hashes,
        and ``parts``, those of their parts) says what they are; taken for
        run ``run_id``, they leave out the state of executors that belongs
        to another run (see ``Executor.snapshot_run``)."""
        blobs: dict[str, bytes] = {}
        keys = run.state.keys() if written is None else written
        for key in keys:
            if key in run.state:
                if not key.isascii():  # (half a character: refused by name, not by JSON)
                    self._enc(key, f"state key {quoted(key)}")
                h, data = self._blob(run.state[key], f"state[{key!r}]")
                state_hashes[key] = h
                blobs[h] = data
            else:
                state_hashes.pop(key, None)
        if written is None:
            for key in [k for k in state_hashes if k not in run.state]:
                del state_hashes[key]
        snapshotting: Mapping[str, Executor] = {}
        parts = dict(parts or {})
        if snapshots is None:  # take them now
            snapshots, snapshotting = {}, self._snapshotting
            if self._per_run_snapshots and run.instances:
                snapshotting = {
                    **snapshotting,
                    **{eid: ex for eid, ex in run.instances.items() if ex.takes_snapshots},
                }
        runs = (run_id, *run.forked_from) if run_id is not None else None
        for eid, executor in snapshotting.items():
            if run_id is not None and not self._of_run(executor, run_id, run.forked_from):
                continue
            h, data, held = self.snapshot_blob(eid, executor, runs)
            snapshots[eid] = h
            blobs[h] = data
            if held:
                blobs.update(held)
                parts[eid] = sorted(held)
        # This runs at every barrier: plain loops rather than comprehensions,
        # and tuples where nothing is appended later.
        inboxes: list[Any] = []
        for eid, inbox in run.inboxes.items():
            entries: list[Any] = []
            for source, message in inbox:
                entries.append(self._entry(eid, len(entries), source, message))
            inboxes.append((eid, entries))
        fan_in: list[Any] = []
        for index, buffer in run.fan_in.items():
            sources = []
            for src, msgs in buffer.items():
                where = f"fan-in buffer {index} from {src!r}"
                sources.append([src, [self._enc(m, where) for m in msgs]])
            fan_in.append([index, sources])
        # Only the sections that hold something: most checkpoints carry an
        # inbox or two and nothing else, and every item costs to write.
        body: dict[str, Any] = {"format": FORMAT}
        if inboxes:
            body["inboxes"] = inboxes
        if fan_in:
            body["fan_in"] = fan_in
        if state_hashes:
            body["state"] = dict(state_hashes)
        if snapshots:
            body["snapshots"] = snapshots
        if parts:
            body["parts"] = parts
        if run.requests:
            body["requests"] = [self._request(r) for r in run.requests.values()]
        if run.answered:
            body["answered"] = sorted(run.answered)
        if run.usage:
            body["usage"] = {path: list(astuple(u)) for path, u in run.usage.items()}
        if run.forked_from:
            body["forked_from"] = list(run.forked_from)
        if written is not None and run.yielded:  # (as JSON to show, never decoded)
            body["outputs"] = [jsonable(v) for v in run.yielded]
        return body, blobs

    def _entry(self, eid: str, index: int, source: str, message: Any) -> tuple[Any, ...]:
        def where() -> str:  # built only if encoding fails
            if type(message) is Response:
                what = f"the answer to request {message.request.request_id!r}"
            else:
                what = f"from {source!r}" if source else "the run input"
            return f"inbox of {eid!r}[{index}] ({what})"

        if type(message) is Response:
            value = encode(message.value, self.registry, where)
            return (source, "r", self._request(message.request), value)
        return (source, "m", encode(message, self.registry, where))

    def _request(self, request: PendingRequest) -> dict[str, Any]:
        path = f"request {request.request_id!r} of executor {request.executor_id!r}"
        key = type_key(request.response_type)
        try:
            self.registry.annotation(key)
        except CheckpointDecodeError as exc:
            raise CheckpointEncodeError(
                f"{path}: its response type {key} is not declared by a @response_handler "
                "nor registered"
            ) from exc
        return {
            "id": request.request_id,
            "executor": request.executor_id,
            "request": self._enc(request.request, path),
            "response_type": key,
            "superstep": request.superstep,
        }

    # -- decoding --

    def check(self, checkpoint: Checkpoint) -> None:
        if checkpoint.signature != self.signature:
            raise CheckpointMismatchError(
                f"checkpoint {checkpoint.id} was written by workflow {checkpoint.workflow!r} "
                f"with a different graph (signature {checkpoint.signature[:12]}…, this "
                f"workflow {self.workflow!r} has {self.signature[:12]}…); the signature covers "
                "the start executor, the executors (ids, types, handler types, maps and "
                "sub-workflows), the edges (kinds, sources, targets, conditions) and the state "
                "reducers: one of these differs"
            )

    def restore(self, checkpoint: Checkpoint) -> RunState:
        """The run state stored in ``checkpoint``; executors' ``restore()``
        hooks are called only once everything decoded."""
        run, snapshots = self.decode(checkpoint)
        self._apply(run, snapshots)
        return run

    def decode(self, checkpoint: Checkpoint) -> tuple[RunState, dict[str, Any]]:
        """What ``checkpoint`` holds — the run state, and the executors'
        snapshots by id — without restoring any executor."""
        self.check(checkpoint)
        label = f"checkpoint {checkpoint.id}"
        with _decoding(label):
            run, snapshots = self._rebuild(
                checkpoint.body,
                checkpoint.superstep,
                label,
                lambda h, path: loads(checkpoint.blobs[h]),
                lambda h: loads(checkpoint.blobs[h]),
            )
        run.paused = checkpoint.status == RunStatus.PAUSED.value
        return run, snapshots

    def restore_shared(self, checkpoint: Checkpoint) -> None:
        """Give the shared executors back the state ``checkpoint`` holds
        (a run answered in memory goes on as it left them, whatever another
        run did with them since); the run's own instances are its already."""
        _, snapshots = self.decode(checkpoint)
        for eid, snapshot in snapshots.items():
            if eid not in self.factories:
                self._known(eid).restore(snapshot)

    @staticmethod
    def _of_run(executor: Executor, run_id: str, forked_from: tuple[str, ...]) -> bool:
        """Whether the executor's state is for run ``run_id``'s checkpoints."""
        owner = executor.snapshot_run()
        return owner is None or owner == run_id or owner in forked_from

    def storable_input(self, value: Any) -> None:
        """``CheckpointEncodeError``, naming where, for a run's input that a
        checkpoint could not hold (half a character, a type with no codec):
        the run would fail at its first barrier, having run nothing."""
        self._enc(value, "the input")

    def storable(self, responses: Mapping[str, Any]) -> None:
        """Refuse, before anything is consumed, an answer a checkpoint could
        not hold (the run would fail at its next save, its request lost)."""
        if not isinstance(responses, Mapping):
            return  # (apply_responses says what is wrong)
        for request_id, value in responses.items():
            try:
                self._enc(value, f"the answer to request {request_id!r}")
            except CheckpointEncodeError as exc:
                raise ResponseValueError(
                    f"{exc} (nothing was recorded: the request is still open)"
                ) from None

    def keep_shared(
        self, ids: Iterable[str], run_id: str, run: RunState
    ) -> dict[str, tuple[bytes, dict[str, bytes]]]:
        """The snapshots of these shared executors, encoded (each with its
        parts): what run ``run_id``, kept in memory without a store, goes on
        with when it is answered, whatever another run did with them since.
        An executor whose snapshot cannot be encoded is left out (without a
        store nothing asked it to be encodable): it goes on as it is then;
        so is one whose state belongs to another run."""
        kept = {}
        for eid in ids:
            executor = self._known(eid)
            if not self._of_run(executor, run_id, run.forked_from):
                continue
            with suppress(CheckpointEncodeError):
                _, data, parts = self.snapshot_blob(eid, executor)
                kept[eid] = (data, parts)
        return kept

    def restore_kept(self, kept: Mapping[str, tuple[bytes, dict[str, bytes]]]) -> None:
        """Give shared executors back what :meth:`keep_shared` encoded."""
        for eid, (data, parts) in kept.items():
            label = f"snapshot of {eid!r}"
            with _decoding(label), reading_parts(partial(_part, parts)):
                snapshot = decode_value(loads(data), self.registry, label)
            self._known(eid).restore(snapshot)

    def _apply(self, run: RunState, snapshots: dict[str, Any]) -> None:
        """Give executors their snapshots back: a shared one restores itself;
        a per-run one is made for the run, then restored."""
        for eid, snapshot in snapshots.items():
            make = self.factories.get(eid)
            if make is None:
                self._known(eid).restore(snapshot)
            else:
                instance = run.instances[eid] = make_executor(make, eid)
                instance.restore(snapshot)

    def _rebuild(
        self,
        body: dict[str, Any],
        superstep: int,
        label: str,
        fetch: Callable[[Any, str], Any],
        part: Callable[[str], Any],
    ) -> tuple[RunState, dict[str, Any]]:
        if body.get("format") != FORMAT:
            raise CheckpointDecodeError(f"{label} has unknown format {body.get('format')!r}")

        def value(ref: Any, path: str) -> Any:
            return decode_value(fetch(ref, path), self.registry, path)

        requests = {r["id"]: self._pending(r) for r in body.get("requests", ())}
        inboxes: dict[str, list[tuple[str, Any]]] = {}
        for eid, entries in body.get("inboxes", ()):
            self._known(eid)
            inboxes[eid] = [self._decode_entry(eid, entry) for entry in entries]
        fan_in: dict[int, dict[str, list[Any]]] = {}
        for index, buffer in body.get("fan_in", ()):
            if not isinstance(index, int):
                raise CheckpointDecodeError(f"fan-in index {index!r} is not an int")
            fan_in[index] = {
                src: [decode_value(m, self.registry, f"fan-in {index} from {src!r}") for m in msgs]
                for src, msgs in buffer
            }
        state = {k: value(h, f"state[{k!r}]") for k, h in body.get("state", {}).items()}
        snapshots = {}
        for eid, h in body.get("snapshots", {}).items():
            self._known(eid)
            with reading_parts(part):  # (one executor's parts are never another's objects)
                snapshots[eid] = value(h, f"snapshot of {eid!r}")
        run = RunState(
            inboxes=inboxes,
            state=state,
            fan_in=fan_in,
            superstep=superstep,
            requests=requests,
            answered=set(body.get("answered", ())),
            usage=_usage(body.get("usage", {})),
            forked_from=_run_ids(body.get("forked_from", []), label),
        )
        return run, snapshots

    def _known(self, eid: str) -> Executor:
        executor = self.executors.get(eid)
        if executor is None:
            raise CheckpointDecodeError(f"checkpoint names unknown executor {eid!r}")
        return executor

    def _pending(self, record: dict[str, Any]) -> PendingRequest:
        path = f"request {record['id']!r}"
        self._known(record["executor"])
        return PendingRequest(
            request_id=record["id"],
            executor_id=record["executor"],
            request=decode_value(record["request"], self.registry, path),
            response_type=self.registry.annotation(record["response_type"]),
            superstep=record["superstep"],
        )

    def _decode_entry(self, eid: str, entry: list[Any]) -> tuple[str, Any]:
        source, kind = entry[0], entry[1]
        path = f"inbox of {eid!r}"
        if kind == "m":
            return source, decode_value(entry[2], self.registry, path)
        if kind == "r":
            request = self._pending(entry[2])
            return source, Response(request, decode_value(entry[3], self.registry, path))
        raise CheckpointDecodeError(f"{path}: unknown entry kind {kind!r}")

    def requests_of(self, checkpoint: Checkpoint) -> list[PendingRequest]:
        """The requests open at ``checkpoint`` (without restoring anything)."""
        self.check(checkpoint)
        with _decoding(f"checkpoint {checkpoint.id}"):
            return [self._pending(record) for record in checkpoint.body.get("requests", ())]

    def hashes(self, checkpoint: Checkpoint) -> dict[str, str]:
        """The state key -> content hash map of ``checkpoint``."""
        return dict(checkpoint.body.get("state", {}))
