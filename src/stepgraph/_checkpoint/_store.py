"""The shared logic of checkpoint stores, and the in-memory store.

A store subclass provides a handful of blocking primitives (write rows, read
a record, read blobs, list, remove); :class:`BaseStore` turns them into the
:class:`CheckpointStore` protocol, sealing and verifying records on the way.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .._exceptions import CheckpointIntegrityError, CheckpointNotFoundError
from ._model import Checkpoint, CheckpointInfo, open_record, seal_record

__all__ = ["BaseStore", "MemoryCheckpointStore", "Row"]

T = TypeVar("T")


@dataclass(slots=True)
class Row:
    """One checkpoint as a store keeps it."""

    id: str
    run_id: str
    workflow: str
    parent_id: str | None
    superstep: int
    created_at: float
    status: str
    pending_requests: int
    record: bytes
    mac: bytes | None
    refs: tuple[str, ...]
    size: int

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


def _secret(secret: str | bytes | None) -> bytes | None:
    if secret is None:
        return None
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < 16:
        raise ValueError("a checkpoint signing secret must be at least 16 bytes")
    return key


class BaseStore:
    """Protocol methods over blocking primitives; see the subclasses."""

    def __init__(self, *, secret: str | bytes | None = None) -> None:
        self._secret = _secret(secret)

    # -- primitives (blocking) -----------------------------------------------

    def _write(self, rows: builtins.list[Row], blobs: Mapping[str, bytes]) -> None:
        raise NotImplementedError

    def _read(self, checkpoint_id: str) -> Row | None:
        raise NotImplementedError

    def _read_latest(self, run_id: str) -> Row | None:
        raise NotImplementedError

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        raise NotImplementedError

    def _rows(self, run_id: str | None, workflow: str | None) -> builtins.list[Row]:
        raise NotImplementedError

    def _remove(self, ids: builtins.list[str]) -> None:
        """Delete these checkpoints and every blob no remaining one references."""
        raise NotImplementedError

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    # -- the protocol ------------------------------------------------------------

    async def save(self, *checkpoints: Checkpoint) -> None:
        if checkpoints:
            # Sealing (canonical JSON, HMAC) runs with the write, off the loop.
            await self._run(self._seal_and_write, checkpoints)

    def _seal_and_write(self, checkpoints: tuple[Checkpoint, ...]) -> None:
        rows: builtins.list[Row] = []
        blobs: dict[str, bytes] = {}
        for cp in checkpoints:
            record, mac = seal_record(cp, self._secret)
            fresh = {h: b for h, b in cp.blobs.items() if h in cp.refs}
            blobs.update(fresh)
            rows.append(
                Row(
                    id=cp.id,
                    run_id=cp.run_id,
                    workflow=cp.workflow,
                    parent_id=cp.parent_id,
                    superstep=cp.superstep,
                    created_at=cp.created_at,
                    status=cp.status,
                    pending_requests=cp.pending_requests,
                    record=record,
                    mac=mac,
                    refs=cp.refs,
                    size=len(record) + sum(len(b) for b in fresh.values()),
                )
            )
        self._write(rows, blobs)

    async def load(self, checkpoint_id: str) -> Checkpoint:
        row = await self._run(self._read, checkpoint_id)
        if row is None:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r} in this store")
        return await self._open(row)

    async def latest(self, run_id: str) -> Checkpoint | None:
        row = await self._run(self._read_latest, run_id)
        return None if row is None else await self._open(row)

    async def _open(self, row: Row) -> Checkpoint:
        blobs = await self._run(self._read_blobs, row.refs)
        checkpoint = open_record(row.record, row.mac, self._secret, blobs)
        if checkpoint.id != row.id or checkpoint.run_id != row.run_id:
            raise CheckpointIntegrityError(
                f"checkpoint {row.id!r}: its record names another checkpoint"
            )
        return checkpoint

    async def list(
        self, run_id: str | None = None, *, workflow: str | None = None
    ) -> builtins.list[CheckpointInfo]:
        return [r.info() for r in await self._run(self._rows, run_id, workflow)]

    async def runs(self, *, workflow: str | None = None) -> builtins.list[CheckpointInfo]:
        latest: dict[str, CheckpointInfo] = {}
        for row in await self._run(self._rows, None, workflow):
            latest.pop(row.run_id, None)  # re-insert: order by latest activity
            latest[row.run_id] = row.info()
        return list(latest.values())

    async def delete(self, checkpoint_id: str) -> None:
        if await self._run(self._read, checkpoint_id) is None:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r} in this store")
        await self._run(self._remove, [checkpoint_id])

    async def delete_run(self, run_id: str) -> int:
        ids = [r.id for r in await self._run(self._rows, run_id, None)]
        if not ids:
            raise CheckpointNotFoundError(f"no run {run_id!r} in this store")
        await self._run(self._remove, ids)
        return len(ids)

    async def prune(self, run_id: str | None = None, *, keep_last: int = 1) -> int:
        if keep_last < 1:
            raise ValueError("prune keeps at least one checkpoint per run (keep_last >= 1)")
        by_run: dict[str, list[str]] = {}
        for row in await self._run(self._rows, run_id, None):
            by_run.setdefault(row.run_id, []).append(row.id)
        doomed = [i for ids in by_run.values() for i in ids[:-keep_last]]
        if doomed:
            await self._run(self._remove, doomed)
        return len(doomed)


class MemoryCheckpointStore(BaseStore):
    """Checkpoints in this process's memory, stored as bytes: nothing a store
    returns is aliased to a live object, and nothing live changes a stored
    checkpoint."""

    def __init__(self, *, secret: str | bytes | None = None) -> None:
        super().__init__(secret=secret)
        self._rows_by_id: dict[str, Row] = {}
        self._blobs: dict[str, bytes] = {}

    def _write(self, rows: builtins.list[Row], blobs: Mapping[str, bytes]) -> None:
        missing = {h for r in rows for h in r.refs} - set(blobs) - set(self._blobs)
        if missing:
            raise CheckpointIntegrityError(
                f"checkpoint references values the store does not hold: {sorted(missing)[:3]}"
            )
        self._blobs.update(blobs)
        for row in rows:
            self._rows_by_id[row.id] = row

    def _read(self, checkpoint_id: str) -> Row | None:
        return self._rows_by_id.get(checkpoint_id)

    def _read_latest(self, run_id: str) -> Row | None:
        found = None
        for row in self._rows_by_id.values():
            if row.run_id == run_id:
                found = row
        return found

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        return {h: self._blobs[h] for h in hashes if h in self._blobs}

    def _rows(self, run_id: str | None, workflow: str | None) -> builtins.list[Row]:
        return [
            r
            for r in self._rows_by_id.values()
            if (run_id is None or r.run_id == run_id)
            and (workflow is None or r.workflow == workflow)
        ]

    def _remove(self, ids: builtins.list[str]) -> None:
        for i in ids:
            self._rows_by_id.pop(i, None)
        keep = {h for r in self._rows_by_id.values() for h in r.refs}
        for h in [h for h in self._blobs if h not in keep]:
            del self._blobs[h]

    @property
    def blob_bytes(self) -> int:
        """Bytes of stored values (for tests and diagnostics)."""
        return sum(len(b) for b in self._blobs.values())


def refs_json(refs: tuple[str, ...]) -> str:
    return json.dumps(list(refs), separators=(",", ":"))
