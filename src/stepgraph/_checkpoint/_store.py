"""The shared logic of checkpoint stores, and the in-memory store.

A store subclass provides a handful of blocking primitives (write
checkpoints, read one, read blobs, list, remove); :class:`BaseStore` turns
them into the :class:`CheckpointStore` protocol and verifies what it reads.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .._exceptions import CheckpointIntegrityError, CheckpointNotFoundError
from ._model import Checkpoint, CheckpointInfo, Row, open_row, seal

__all__ = ["BaseStore", "MemoryCheckpointStore"]

T = TypeVar("T")


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

    def _write(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: builtins.list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        """Store the checkpoints (with ``blob_bytes[i]`` bytes of new blobs
        each) and the new ``blobs``, all or nothing; sign them when the store
        has a secret."""
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
            # Encoding and signing run with the write, off the loop.
            await self._run(self._write_new, checkpoints)

    def _write_new(self, checkpoints: tuple[Checkpoint, ...]) -> None:
        blobs: dict[str, bytes] = {}
        blob_bytes: builtins.list[int] = []
        for cp in checkpoints:
            size = 0
            if cp.blobs:
                for h in cp.refs:
                    blob = cp.blobs.get(h)
                    if blob is not None:
                        blobs[h] = blob
                        size += len(blob)
            blob_bytes.append(size)
        self._write(checkpoints, blob_bytes, blobs)

    async def load(self, checkpoint_id: str) -> Checkpoint:
        row = await self._run(self._read, checkpoint_id)
        if row is None:
            raise CheckpointNotFoundError(f"no checkpoint {checkpoint_id!r} in this store")
        return await self._open(row)

    async def latest(self, run_id: str) -> Checkpoint | None:
        row = await self._run(self._read_latest, run_id)
        return None if row is None else await self._open(row)

    async def _open(self, row: Row) -> Checkpoint:
        blobs = await self._run(self._read_blobs, row.ref_list)
        return open_row(row, self._secret, blobs)

    async def list(
        self, run_id: str | None = None, *, workflow: str | None = None
    ) -> builtins.list[CheckpointInfo]:
        return [r.info for r in await self._run(self._rows, run_id, workflow)]

    async def runs(self, *, workflow: str | None = None) -> builtins.list[CheckpointInfo]:
        latest: dict[str, CheckpointInfo] = {}
        for row in await self._run(self._rows, None, workflow):
            latest.pop(row.run_id, None)  # re-insert: order by latest activity
            latest[row.run_id] = row.info
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

    def _write(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: builtins.list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        pairs = zip(checkpoints, blob_bytes, strict=True)
        rows = [Row._make(seal(cp, n, self._secret)) for cp, n in pairs]
        taken = [r.id for r in rows if r.id in self._rows_by_id]
        if taken:
            raise CheckpointIntegrityError(f"checkpoint ids already stored: {taken[:3]}")
        missing = {h for r in rows for h in r.ref_list} - set(blobs) - set(self._blobs)
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
        keep = {h for r in self._rows_by_id.values() for h in r.ref_list}
        for h in [h for h in self._blobs if h not in keep]:
            del self._blobs[h]

    @property
    def blob_bytes(self) -> int:
        """Bytes of stored values (for tests and diagnostics)."""
        return sum(len(b) for b in self._blobs.values())
