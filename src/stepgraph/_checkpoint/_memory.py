"""``MemoryCheckpointStore``: checkpoints in this process's memory.

Rows are stored as bytes (nothing a store returns is aliased to a live
object), indexed by id and by run; each value records which runs reference
it, so saving, deleting and pruning cost what the checkpoints concerned
hold, never a scan of the store.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Mapping

from .._core import quoted
from .._exceptions import CheckpointIntegrityError, CheckpointNotFoundError
from ._model import Checkpoint, Row, RunInfo, RunQuery, answered_twice, seal
from ._store import RUNNING_STATUSES, BaseStore

__all__ = ["MemoryCheckpointStore"]


class _Run:
    """One run's rows (in save order) and what the run index shows of it."""

    __slots__ = ("ended", "error", "refs", "requests", "rows", "size", "started_at", "updated_at")

    def __init__(self, started_at: float) -> None:
        self.rows: dict[str, Row] = {}
        self.refs: set[str] = set()  # every value some row references
        self.requests: set[str] = set()
        self.size = 0
        self.started_at = started_at
        self.updated_at = started_at
        self.ended: str | None = None  # "failed"/"cancelled" after the latest row
        self.error: str | None = None

    def info(self, run_id: str) -> RunInfo:
        last = next(reversed(self.rows.values()))
        return RunInfo(
            run_id=run_id,
            workflow=last.workflow,
            signature=last.signature,
            status=self.ended or last.status,
            superstep=last.superstep,
            pending_requests=last.pending_requests,
            last_checkpoint=last.id,
            checkpoints=len(self.rows),
            size=self.size,
            started_at=self.started_at,
            updated_at=self.updated_at,
            error=self.error,
        )


class MemoryCheckpointStore(BaseStore):
    """Checkpoints in this process's memory, stored as bytes: nothing a store
    returns is aliased to a live object, and nothing live changes a stored
    checkpoint."""

    def __init__(self, *, secret: str | bytes | None = None) -> None:
        super().__init__(secret=secret)
        self._by_id: dict[str, Row] = {}  # in save order
        self._by_run: dict[str, _Run] = {}  # in the order the runs started
        self._blobs: dict[str, bytes] = {}
        self._owners: dict[str, set[str]] = {}  # value hash -> runs referencing it
        self._requests: dict[str, str] = {}  # request id -> the run that opened it
        self._answered: dict[str, dict[str, str]] = {}  # run -> request -> checkpoint
        self._leases: dict[str, str] = {}  # run id -> holder

    def _write(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: builtins.list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        pairs = zip(checkpoints, blob_bytes, strict=True)
        rows = [Row._make(seal(cp, n, self._secret)) for cp, n in pairs]
        taken: builtins.list[str] = []
        seen: set[str] = set()
        for row in rows:
            if row.id in self._by_id or row.id in seen:
                taken.append(row.id)
            seen.add(row.id)
        if taken:
            raise CheckpointIntegrityError(f"checkpoint ids already stored: {taken[:3]}")
        answering: dict[tuple[str, str], str] = {}
        for cp in checkpoints:
            for request_id in cp.answered:
                key = (cp.run_id, request_id)
                before = self._answered.get(cp.run_id, {}).get(request_id) or answering.get(key)
                if before is not None:
                    raise answered_twice(cp.run_id, request_id, before)
                answering[key] = cp.id
        missing = {h for r in rows for h in r.ref_list if h not in blobs and h not in self._blobs}
        if missing:
            raise CheckpointIntegrityError(
                f"checkpoint references values the store does not hold: {sorted(missing)[:3]}"
            )
        self._blobs.update(blobs)
        for (run_id, request_id), checkpoint_id in answering.items():
            self._answered.setdefault(run_id, {})[request_id] = checkpoint_id
        for cp in checkpoints:
            if cp.holder is not None:
                if cp.release:
                    self._release_lease(cp.run_id, cp.holder)
                else:
                    self._leases[cp.run_id] = cp.holder
        for cp, row in zip(checkpoints, rows, strict=True):
            run = self._by_run.get(row.run_id)
            if run is None:
                run = self._by_run[row.run_id] = _Run(row.created_at)
            run.rows[row.id] = row
            run.size += row.size
            run.updated_at = row.created_at
            run.ended = run.error = None  # the run went on
            for h in row.ref_list:
                if h not in run.refs:
                    run.refs.add(h)
                    self._owners.setdefault(h, set()).add(row.run_id)
            for request_id in cp.request_ids:
                if self._requests.setdefault(request_id, row.run_id) == row.run_id:
                    run.requests.add(request_id)
            self._by_id[row.id] = row

    def _read(self, checkpoint_id: str) -> Row | None:
        return self._by_id.get(checkpoint_id)

    def _read_latest(self, run_id: str) -> Row | None:
        run = self._by_run.get(run_id)
        return None if run is None else next(reversed(run.rows.values()))

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        return {h: self._blobs[h] for h in hashes if h in self._blobs}

    def _rows(
        self, run_id: str | None, workflow: str | None
    ) -> tuple[builtins.list[Row], builtins.list[str]]:
        if run_id is not None:
            run = self._by_run.get(run_id)
            rows: Iterable[Row] = run.rows.values() if run is not None else ()
        else:
            rows = self._by_id.values()
        return [r for r in rows if workflow is None or r.workflow == workflow], []

    def _rows_page(
        self, run_id: str, before: int | None, count: int
    ) -> tuple[builtins.list[Row], builtins.list[str], int | None]:
        run = self._by_run.get(run_id)
        rows = builtins.list(run.rows.values()) if run is not None else []
        end = len(rows) if before is None else before
        start = max(0, end - count)
        return rows[start:end], [], start or None

    def _runs_newest_first(self, before: str | None) -> Iterable[tuple[str, _Run]]:
        if before is not None and before not in self._by_run:
            raise CheckpointNotFoundError(f"no run {quoted(before)} in this store (before=)")
        found = before is None
        for run_id in reversed(self._by_run):
            if found:
                yield run_id, self._by_run[run_id]
            elif run_id == before:
                found = True

    def _runs(self, query: RunQuery) -> tuple[builtins.list[RunInfo], builtins.list[str]]:
        out: builtins.list[RunInfo] = []
        for run_id, run in self._runs_newest_first(query.before):
            info = run.info(run_id)
            if query.matches(info):
                out.append(info)
                if len(out) == query.limit:
                    break
        return out, []

    def _run_of_request(self, request_id: str) -> RunInfo | None:
        run_id = self._requests.get(request_id)
        return None if run_id is None else self._by_run[run_id].info(run_id)

    def _run_info(self, run_id: str) -> RunInfo | None:
        run = self._by_run.get(run_id)
        return None if run is None else run.info(run_id)

    def _set_status(self, run_id: str, status: str, error: str | None) -> None:
        run = self._by_run.get(run_id)
        if run is not None:
            run.ended, run.error, run.updated_at = status, error, time.time()
        self._cancels.pop(run_id, None)

    def _request_cancel(self, run_id: str, at: float) -> bool:
        run = self._by_run.get(run_id)
        if run is None or run.info(run_id).status not in RUNNING_STATUSES:
            return False
        self._cancels[run_id] = at
        return True

    def _answers(self, run_id: str, request_ids: builtins.list[str]) -> dict[str, str]:
        answered = self._answered.get(run_id, {})
        return {r: answered[r] for r in request_ids if r in answered}

    def _lease(self, run_id: str, holder: str) -> str | None:
        current = self._leases.get(run_id)
        if current is not None and current != holder:
            return current  # (this process's: alive by definition)
        self._leases[run_id] = holder
        return None

    def _release_lease(self, run_id: str, holder: str) -> None:
        if self._leases.get(run_id) == holder:
            del self._leases[run_id]

    def _holder(self, run_id: str) -> str | None:
        return self._leases.get(run_id)  # (this process's: alive by definition)

    def _run_ids(self, run_id: str | None, more_than: int) -> dict[str, builtins.list[str]]:
        chosen = [run_id] if run_id is not None else builtins.list(self._by_run)
        return {
            r: builtins.list(self._by_run[r].rows)
            for r in chosen
            if r in self._by_run and len(self._by_run[r].rows) > more_than
        }

    def _remove(self, ids: builtins.list[str]) -> None:
        touched: dict[str, _Run] = {}
        for checkpoint_id in ids:
            row = self._by_id.pop(checkpoint_id, None)
            if row is None:
                continue
            run = touched[row.run_id] = self._by_run[row.run_id]
            if checkpoint_id == next(reversed(run.rows)):
                run.ended = run.error = None  # its latest is now an earlier one
            del run.rows[checkpoint_id]
            run.size -= row.size
        for run_id, run in touched.items():
            if not run.rows:
                self._forget(run_id, run)
                continue
            kept = {h for row in run.rows.values() for h in row.ref_list}
            self._release(run_id, run.refs - kept)
            run.refs = kept

    def _remove_run(self, run_id: str) -> int:
        run = self._by_run.get(run_id)
        if run is None:
            return 0
        for checkpoint_id in run.rows:
            del self._by_id[checkpoint_id]
        self._forget(run_id, run)
        return len(run.rows)

    def _forget(self, run_id: str, run: _Run) -> None:
        del self._by_run[run_id]
        self._answered.pop(run_id, None)
        self._cancels.pop(run_id, None)
        self._release(run_id, run.refs)
        for request_id in run.requests:
            del self._requests[request_id]

    def _release(self, run_id: str, hashes: Iterable[str]) -> None:
        """``run_id`` no longer references ``hashes``: drop the values no run
        references."""
        for h in hashes:
            owners = self._owners[h]
            owners.discard(run_id)
            if not owners:
                del self._owners[h]
                del self._blobs[h]

    @property
    def blob_bytes(self) -> int:
        """Bytes of stored values (for tests and diagnostics)."""
        return sum(len(b) for b in self._blobs.values())
