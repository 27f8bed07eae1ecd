"""Checkpoints as stores keep them, and the store protocol.

A :class:`Checkpoint` is a few header fields, a small JSON body (the
manifest) and content-addressed blobs: each blob is keyed by the SHA-256 of
its bytes and stored once, so a checkpoint that leaves a state value
unchanged references its parent's blob instead of copying it. Stores verify
every blob's hash on load, and with a ``secret`` sign each checkpoint (its
header fields and body bytes) with HMAC-SHA256.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._core import RunStatus, quoted
from .._exceptions import CheckpointEncodeError, CheckpointIntegrityError, RequestError
from ._codec import blob_hash, dumps_compact, loads

__all__ = [
    "ANSWER_FORK_HINT",
    "answered_twice",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointStore",
    "FORMAT",
    "Row",
    "RunInfo",
    "RunQuery",
    "RowValues",
    "blob_hash",
    "body_bytes",
    "check_types",
    "header",
    "open_row",
    "seal",
    "sign",
    "split_refs",
    "verified_body",
]


@dataclass(slots=True, kw_only=True)
class Checkpoint:
    """One checkpoint. ``body`` is the JSON-able manifest; ``refs`` are the
    blob hashes it references; ``blobs`` holds blob bytes by hash (on save at
    least the new ones, on load all of ``refs``).

    A plain record (one is built at every barrier, so it is kept cheap):
    stores keep bytes, never the object saved, and every ``load`` returns a
    new one, so changing a checkpoint changes nothing stored."""

    id: str
    run_id: str
    workflow: str
    signature: str
    superstep: int
    parent_id: str | None
    created_at: float
    status: str
    pending_requests: int = 0
    body: dict[str, Any] = field(default_factory=dict)
    refs: tuple[str, ...] = ()
    blobs: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    # The ids of the requests open at this checkpoint: an index for finding
    # the run that owns a request (the body, which is signed, holds them too).
    request_ids: tuple[str, ...] = ()
    # The requests this checkpoint answers (a continuation's first): the
    # store records each answer once per run and refuses a second.
    answered: tuple[str, ...] = ()
    # The run's lease, with the same write: taken for ``holder`` (a new run's
    # first save), or given back after it (``release``: a run's last save).
    holder: str | None = None
    release: bool = False
    # As loaded: whether it is stored signed (a store opened without the
    # secret reads it unverified, and must not go on from it unsigned).
    signed: bool = False

    kind = "checkpoint"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointInfo:
    """A checkpoint's listing entry. ``size`` is the bytes its record and
    the blobs it introduced take."""

    id: str
    run_id: str
    workflow: str
    superstep: int
    parent_id: str | None
    created_at: float
    status: str
    pending_requests: int
    size: int

    kind = "checkpoint_info"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """A run as a store lists it: its latest checkpoint's position and
    status, what it holds, and when it started and last changed.

    ``status`` is the latest checkpoint's status, or how the run ended when
    it ended after that checkpoint (``"failed"`` with ``error``, or
    ``"cancelled"``). ``size`` is the bytes its checkpoints and the values
    they introduced take."""

    run_id: str
    workflow: str
    signature: str
    status: str
    superstep: int
    pending_requests: int
    last_checkpoint: str
    checkpoints: int
    size: int
    started_at: float
    updated_at: float
    error: str | None = None

    kind = "run_info"


# The largest count a store's SQL takes (64-bit): a larger limit or
# keep_last means "all of them".
MOST = 2**63 - 1


_STATUS_VALUES = tuple(status.value for status in RunStatus)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunQuery:
    """Which runs ``runs()`` lists: filters, a page size and where the page
    starts (the runs started before ``before``)."""

    workflow: str | None = None
    signature: str | None = None
    status: str | None = None
    limit: int | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in _STATUS_VALUES:
            # (a misspelt status, "canceled" or "IDLE", listed no run at all)
            raise ValueError(
                f"unknown status {quoted(str(self.status))}; use a RunStatus or one of "
                + ", ".join(_STATUS_VALUES)
            )
        limit = self.limit
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or limit < 1
        ):
            raise ValueError(f"limit must be a whole number, at least 1, got {limit!r:.200}")
        if self.limit is not None and self.limit > MOST:
            object.__setattr__(self, "limit", None)  # (more than any store holds: no limit)

    def equalities(self) -> tuple[tuple[str, str | None], ...]:
        """The run fields it filters on, each with the value wanted
        (``None``: any)."""
        return (("workflow", self.workflow), ("signature", self.signature), ("status", self.status))

    def matches(self, run: RunInfo) -> bool:
        return all(v is None or getattr(run, f) == v for f, v in self.equalities())


class Row(NamedTuple):
    """One checkpoint as stores keep it: header fields, the body's JSON bytes
    and, in signing stores, the HMAC-SHA256 of ``header() + body``."""

    id: str
    run_id: str
    workflow: str
    signature: str
    parent_id: str | None
    superstep: int
    created_at: float
    status: str
    pending_requests: int
    refs: str  # the referenced blob hashes, comma-separated
    size: int  # bytes of the body and of the blobs this checkpoint introduced
    body: bytes
    mac: bytes | None

    @property
    def ref_list(self) -> tuple[str, ...]:
        return split_refs(self.refs)

    @property
    def info(self) -> CheckpointInfo:
        return CheckpointInfo(
            id=self.id,
            run_id=self.run_id,
            workflow=self.workflow,
            superstep=self.superstep,
            parent_id=self.parent_id,
            created_at=self.created_at,
            status=self.status,
            pending_requests=self.pending_requests,
            size=self.size,
        )


def split_refs(refs: str) -> tuple[str, ...]:
    """The blob hashes of a row's comma-separated ``refs`` field."""
    return tuple(refs.split(",")) if refs else ()


RowValues = tuple[Any, ...]  # a Row's fields as a plain tuple
FORMAT = 2  # the layout of signed headers and of stored segments
_SIGNED_FIELDS = Row._fields.index("size")  # a signature covers the fields before


def header(row: RowValues) -> bytes:
    """What a signature covers besides the body: the fields that describe a
    checkpoint, in order, as one JSON line (floats round-trip exactly)."""
    return dumps_compact([FORMAT, *row[:_SIGNED_FIELDS]]) + b"\n"


# How a Python caller answers again (the command line says it its own way).
ANSWER_FORK_HINT = "fork the run: run(..., fork=True), or stepgraph run --fork"


def answered_twice(run_id: str, request_id: str, checkpoint_id: str) -> RequestError:
    """The error a store raises for an answer it has recorded already."""
    return RequestError(
        f"request {request_id!r} of run {run_id!r} was already answered (at checkpoint "
        f"{checkpoint_id}); to answer it again from an earlier checkpoint, {ANSWER_FORK_HINT}"
    )


def sign(row: RowValues, body: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, header(row) + body, hashlib.sha256).digest()


def body_bytes(checkpoint: Checkpoint) -> bytes:
    """The stored bytes of a checkpoint's body; ``CheckpointEncodeError`` if
    it is not JSON."""
    try:
        return dumps_compact(checkpoint.body)
    except (TypeError, ValueError) as exc:
        raise CheckpointEncodeError(
            f"checkpoint {checkpoint.id!r}: its body is not JSON: {exc}"
        ) from exc


def seal(checkpoint: Checkpoint, blob_bytes: int, secret: bytes | None) -> RowValues:
    """``checkpoint`` as row values, ``blob_bytes`` of new blobs counted in
    its size, signed when there is a secret."""
    body = body_bytes(checkpoint)
    row: RowValues = (
        checkpoint.id,
        checkpoint.run_id,
        checkpoint.workflow,
        checkpoint.signature,
        checkpoint.parent_id,
        checkpoint.superstep,
        checkpoint.created_at,
        checkpoint.status,
        checkpoint.pending_requests,
        ",".join(checkpoint.refs),
        len(body) + blob_bytes,
        body,
        None,
    )
    return row if secret is None else (*row[:-1], sign(row, body, secret))


def open_row(row: Row, secret: bytes | None, blobs: Mapping[str, bytes]) -> Checkpoint:
    """Verify and parse a stored checkpoint; every referenced blob must be
    present and match its hash."""
    body = verified_body(row, secret)
    refs = row.ref_list
    found: dict[str, bytes] = {}
    for ref in refs:
        blob = blobs.get(ref)
        if blob is None:
            raise CheckpointIntegrityError(
                f"checkpoint {row.id} references missing stored value {ref}"
            )
        if blob_hash(blob) != ref:
            raise CheckpointIntegrityError(
                f"checkpoint {row.id}: stored value {ref} is corrupt (hash mismatch)"
            )
        found[ref] = blob
    return Checkpoint(
        id=row.id,
        run_id=row.run_id,
        workflow=row.workflow,
        signature=row.signature,
        superstep=row.superstep,
        parent_id=row.parent_id,
        created_at=float(row.created_at),
        status=row.status,
        pending_requests=row.pending_requests,
        body=body,
        refs=refs,
        blobs=found,
        signed=row.mac is not None,
    )


def verified_body(row: Row, secret: bytes | None) -> dict[str, Any]:
    """A stored checkpoint's body, its fields' types and (in a signing
    store) its signature checked; its values are not read."""
    check_types(row)
    if secret is not None:
        if row.mac is None:
            raise CheckpointIntegrityError(
                f"checkpoint {row.id!r} is unsigned, but this store requires signed checkpoints"
            )
        if not hmac.compare_digest(sign(row, row.body, secret), row.mac):
            raise CheckpointIntegrityError(
                f"checkpoint {row.id!r}: its signature does not match: it was altered, or "
                "signed with another secret"
            )
    body = loads(row.body)
    if not isinstance(body, dict):
        raise CheckpointIntegrityError(f"checkpoint {row.id!r}: its body is not an object")
    return body


_FIELD_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("id", str),
    ("run_id", str),
    ("workflow", str),
    ("signature", str),
    ("parent_id", (str, type(None))),
    ("superstep", int),
    ("created_at", (float, int)),
    ("status", str),
    ("pending_requests", int),
    ("refs", str),
    ("size", int),
    ("body", bytes),
    ("mac", (bytes, type(None))),
)


def check_types(row: Row) -> None:
    """``CheckpointIntegrityError`` unless every field has its type."""
    for name, kind in _FIELD_TYPES:
        value = getattr(row, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointIntegrityError(
                f"checkpoint {row.id!r}: stored field {name!r} has the wrong type "
                f"({type(value).__name__})"
            )
    # A time is a finite float: not an int too large for one, nor infinite
    # (which a signature's header and the API's JSON could not even write).
    if not (-_LATEST < row.created_at < _LATEST):
        raise CheckpointIntegrityError(
            f"checkpoint {row.id!r}: stored field 'created_at' is no time "
            f"({'an int too large' if isinstance(row.created_at, int) else row.created_at})"
        )


_LATEST = sys.float_info.max


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints live. All methods are coroutines; implementations
    keep blocking I/O off the event loop."""

    async def save(self, *checkpoints: Checkpoint) -> None:
        """Store checkpoints atomically (each whole or not at all), in order."""
        ...

    async def load(self, checkpoint_id: str) -> Checkpoint:
        """The checkpoint, verified; ``CheckpointNotFoundError`` if absent."""
        ...

    async def latest(self, run_id: str) -> Checkpoint | None:
        """The run's most recently saved checkpoint."""
        ...

    async def list(
        self,
        run_id: str | None = None,
        *,
        workflow: str | None = None,
        last: int | None = None,
    ) -> builtins.list[CheckpointInfo]:
        """Checkpoints in save order, optionally of one run or workflow;
        with ``last=N`` (and ``run_id``), only the run's newest ``N`` — read
        without reading the rest of the run."""
        ...

    async def runs(
        self,
        *,
        workflow: str | None = None,
        signature: str | None = None,
        status: str | RunStatus | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> builtins.list[RunInfo]:
        """Runs, the most recently started first (at most ``limit``; with
        ``before=RUN_ID``, those started before that run: the next page)."""
        ...

    async def run_info(self, run_id: str) -> RunInfo | None:
        """One run's index entry, if the store holds the run."""
        ...

    async def set_status(
        self, run_id: str, status: str | RunStatus, error: str | None = None
    ) -> None:
        """Record how a run ended after its latest checkpoint (failed,
        cancelled); a run the store does not hold is ignored."""
        ...

    async def find_request(self, request_id: str) -> RunInfo | None:
        """The run in which a request was opened, if the store holds it."""
        ...

    async def request_cancel(self, run_id: str) -> bool:
        """Ask a running run to stop at its next barrier, in whichever process
        it runs (status ``CANCELLED``, resumable). ``False``, asking nothing,
        if the store does not hold the run or its status (``run_info``) is not
        ``in_progress`` / ``in_progress_pending_requests``: a paused, idle,
        failed or cancelled run, or one waiting for answers, runs nothing to
        stop; nor does a run no process holds (its lease is free: its process
        ended without recording how). A run resumed from a checkpoint keeps
        that checkpoint's status until its first barrier after the resume."""
        ...

    def cancel_requested(self, run_id: str, since: float) -> bool:
        """Whether a cancel was asked for ``run_id`` at or after ``since``
        (a time), as far as the store learned while saving that run's
        checkpoints: no I/O, so a barrier asks for free."""
        ...

    async def answers(self, run_id: str, request_ids: Iterable[str]) -> dict[str, str]:
        """Which of these requests of the run were answered already: request
        id -> the checkpoint that recorded the answer."""
        ...

    async def lease(self, run_id: str, holder: str) -> str | None:
        """Take the run for ``holder`` (one process's one run call): ``None``
        when taken, or the holder that has it. A holder whose process has
        ended holds nothing: its lease is taken over at once."""
        ...

    async def release(self, run_id: str, holder: str) -> None:
        """Give the run back (nothing happens unless ``holder`` has it)."""
        ...

    async def cancel_asked(self, run_id: str, since: float) -> bool:
        """Like ``cancel_requested``, but asks the store now (I/O): for a run
        whose superstep lasts long, between barriers."""
        ...

    async def delete(self, checkpoint_id: str) -> None:
        """Remove one checkpoint (and values nothing else references)."""
        ...

    async def delete_run(self, run_id: str) -> int:
        """Remove every checkpoint of a run (damaged ones included); returns
        how many."""
        ...

    async def prune(self, run_id: str | None = None, *, keep_last: int = 1) -> int:
        """Keep the last ``keep_last`` checkpoints of each run (or of one);
        returns how many were removed."""
        ...
