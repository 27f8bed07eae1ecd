"""Checkpoint records and the store protocol.

A :class:`Checkpoint` is a small JSON record (the manifest) plus
content-addressed blobs: each blob is keyed by the SHA-256 of its bytes and
stored once, so a checkpoint that leaves a state value unchanged references
its parent's blob instead of copying it. Stores verify every blob's hash on
load, and with a ``secret`` sign each record with HMAC-SHA256.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .._exceptions import CheckpointIntegrityError
from ._codec import loads

__all__ = [
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointStore",
    "blob_hash",
    "open_record",
    "seal_record",
]


def blob_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """One checkpoint. ``body`` is the JSON-able manifest; ``refs`` are the
    blob hashes it references; ``blobs`` holds blob bytes by hash (on save at
    least the new ones, on load all of ``refs``)."""

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

    kind = "checkpoint"

    def record(self) -> dict[str, Any]:
        """Everything but the blobs, as stored (and signed)."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "workflow": self.workflow,
            "signature": self.signature,
            "superstep": self.superstep,
            "parent_id": self.parent_id,
            "created_at": self.created_at,
            "status": self.status,
            "pending_requests": self.pending_requests,
            "body": self.body,
            "refs": list(self.refs),
        }


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


def seal_record(checkpoint: Checkpoint, secret: bytes | None) -> tuple[bytes, bytes | None]:
    """The record's canonical bytes and, with a secret, their HMAC-SHA256."""
    # Records need no canonical key order (the stored bytes are what is signed);
    # values do (content addressing), and they are encoded with ``dumps``.
    data = json.dumps(checkpoint.record(), separators=(",", ":"), ensure_ascii=False).encode()
    mac = hmac.new(secret, data, hashlib.sha256).digest() if secret is not None else None
    return data, mac


def open_record(
    data: bytes, mac: bytes | None, secret: bytes | None, blobs: Mapping[str, bytes]
) -> Checkpoint:
    """Verify and parse a stored record; every referenced blob must be
    present and match its hash."""
    if secret is not None:
        if mac is None:
            raise CheckpointIntegrityError(
                "checkpoint is unsigned, but this store requires signed checkpoints"
            )
        expected = hmac.new(secret, data, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise CheckpointIntegrityError("checkpoint signature does not match: it was altered")
    record = loads(data)
    try:
        checkpoint = Checkpoint(
            id=_typed(record, "id", str),
            run_id=_typed(record, "run_id", str),
            workflow=_typed(record, "workflow", str),
            signature=_typed(record, "signature", str),
            superstep=_typed(record, "superstep", int),
            parent_id=record["parent_id"] if record.get("parent_id") is not None else None,
            created_at=float(_typed(record, "created_at", (int, float))),
            status=_typed(record, "status", str),
            pending_requests=_typed(record, "pending_requests", int),
            body=_typed(record, "body", dict),
            refs=tuple(_typed(record, "refs", list)),
            blobs={},
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointIntegrityError(f"checkpoint record is malformed: {exc}") from exc
    found: dict[str, bytes] = {}
    for ref in checkpoint.refs:
        blob = blobs.get(ref)
        if blob is None:
            raise CheckpointIntegrityError(
                f"checkpoint {checkpoint.id} references missing stored value {ref}"
            )
        if blob_hash(blob) != ref:
            raise CheckpointIntegrityError(
                f"checkpoint {checkpoint.id}: stored value {ref} is corrupt (hash mismatch)"
            )
        found[ref] = blob
    return Checkpoint(**{**_fields(checkpoint), "blobs": found})


def _typed(record: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(record, dict):
        raise TypeError("record is not an object")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"field {key!r} has the wrong type")
    return value


def _fields(checkpoint: Checkpoint) -> dict[str, Any]:
    return {name: getattr(checkpoint, name) for name in Checkpoint.__dataclass_fields__}


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
        self, run_id: str | None = None, *, workflow: str | None = None
    ) -> builtins.list[CheckpointInfo]:
        """Checkpoints in save order, optionally of one run or workflow."""
        ...

    async def runs(self, *, workflow: str | None = None) -> builtins.list[CheckpointInfo]:
        """The latest checkpoint of each run, oldest run first."""
        ...

    async def delete(self, checkpoint_id: str) -> None:
        """Remove one checkpoint (and values nothing else references)."""
        ...

    async def delete_run(self, run_id: str) -> int:
        """Remove every checkpoint of a run; returns how many."""
        ...

    async def prune(self, run_id: str | None = None, *, keep_last: int = 1) -> int:
        """Keep the last ``keep_last`` checkpoints of each run (or of one);
        returns how many were removed."""
        ...
