"""The shared logic of checkpoint stores.

A store subclass provides a handful of blocking primitives (write
checkpoints, read one, read blobs, list, remove, the run index);
:class:`BaseStore` turns them into the :class:`CheckpointStore` protocol and
verifies what it reads. Every primitive's cost follows the run it touches,
not the size of the store: listing runs reads an index, and deleting a run
or pruning it reads only that run.
"""

from __future__ import annotations

import builtins
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any, Self, TypeVar

from .._core import RunStatus, a_string, a_value_type, lone_surrogate_at, quoted
from .._exceptions import (
    CheckpointEncodeError,
    CheckpointError,
    CheckpointIntegrityError,
    CheckpointNotFoundError,
    CheckpointWarning,
)
from ._leases import holding, new_holder
from ._model import (
    MOST,
    Checkpoint,
    CheckpointInfo,
    Row,
    RunInfo,
    RunQuery,
    open_row,
    verified_body,
)

__all__ = [
    "BaseStore",
    "RUNNING_STATUSES",
    "SECRET_HINT",
    "STOP_FIRST",
    "TERMINAL_STATUSES",
    "equal_to",
    "going_on_from",
    "where",
]

T = TypeVar("T")

# Records read by the first page of a run read newest first (``list(last=)``,
# ``outputs(after=)``: a record holds one checkpoint or a batch of them, up
# to SEGMENT_BYTES), then four times more each page: the newest few
# checkpoints cost a record or two, however long the run.
_FIRST_PAGE = 1
_MAX_PAGE = 4096
# Bytes of records a walk along a lineage that only counts what it passes
# (``outputs_slice``) reads at a time: its pages grow only this far, so a run
# of large outputs is never held at once. And how many checkpoints it then
# reads back at a time for the outputs it returns.
_PAGE_BYTES = 4 << 20
_READ_BACK = 64

# How a run may end after its latest checkpoint (``set_status``).
TERMINAL_STATUSES = frozenset({"failed", "cancelled"})
# The statuses of a run that is going on: the only runs a cancel can stop.
# Paused, idle and waiting-for-answers runs execute nothing until resumed.
RUNNING_STATUSES = frozenset({"in_progress", "in_progress_pending_requests"})


def equal_to(pairs: Iterable[tuple[str, Any]], mark: str) -> tuple[list[str], list[Any]]:
    """SQL conditions ``column = <mark>`` for the pairs whose value is given,
    and those values (columns are the caller's constants, never input)."""
    given = [(column, value) for column, value in pairs if value is not None]
    return [f"{column} = {mark}" for column, _ in given], [value for _, value in given]


def where(clauses: builtins.list[str]) -> str:
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def _storable(text: str | None) -> str | None:
    """An error's text as every store can keep it: NUL (which PostgreSQL's
    text cannot hold) and lone surrogates (which UTF-8 cannot) escaped —
    an error that said either was not recorded at all."""
    if text is None:
        return None
    text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


# What each name a store method looks up is (a string), for its refusal.
_NAMES = {
    "run_id": "a run id",
    "checkpoint_id": "a checkpoint id",
    "request_id": "a request id",
    "workflow": "a workflow name",
    "signature": "a graph signature",
    "before": "a run id",
    "after": "a checkpoint id",
    "holder": "a holder's name",
}


def _absent(call: str, **names: str | None) -> bool:
    """Whether a name looked up holds half a character (a lone surrogate):
    no store holds one (a save refuses it, and the SQL drivers cannot even
    send it), so the lookup finds nothing, as it does in memory. A name that
    is no string (``request_cancel(7)``) is refused naming it and ``call``
    (it failed deep inside: "'int' object has no attribute 'isascii'")."""
    absent = False
    for name, value in names.items():
        if value is not None:
            a_string(value, f"{call}: {name}= takes {_NAMES[name]}, a string")
            absent = absent or (value != "" and lone_surrogate_at(value) is not None)
    return absent


def _named(call: str, run_id: str) -> str:
    """A run id a lease or a status is written for: half a character is
    refused by name (every store's answer; the SQL drivers' is an encoding
    error)."""
    if _absent(call, run_id=run_id):
        raise ValueError(
            f"run id {quoted(run_id)} holds half a character (a lone surrogate), which no "
            "store keeps: no run has that id"
        )
    return run_id


def _secret(secret: str | bytes | None) -> bytes | None:
    if secret is None:
        return None
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < 16:
        raise ValueError("a checkpoint signing secret must be at least 16 bytes")
    return key


# What a refusal to delete a run going on advises; the command line puts it
# in its own terms.
STOP_FIRST = "stop it first (request_cancel, or stepgraph runs cancel) or wait for it to end"

# How a refusal to go on from a signed checkpoint without the secret ends;
# the server and the command line put it in their own terms.
SECRET_HINT = "open the store with its secret (secret=, or STEPGRAPH_SECRET for the command line)"


def going_on_from(store: Any, checkpoint: Checkpoint) -> None:
    """Refuse to write after a signed ``checkpoint`` through a ``store``
    opened without its secret: the unsigned checkpoints would cut the run
    off for the store's signing users (they refuse unsigned ones)."""
    if checkpoint.signed and not getattr(store, "signs", True):
        raise CheckpointIntegrityError(
            f"checkpoint {checkpoint.id} is signed, but this store was opened without its "
            "secret: going on from it would add unsigned checkpoints, which the store's "
            f"signing users could not load; {SECRET_HINT}"
        )


class BaseStore:
    """Protocol methods over blocking primitives; see the subclasses."""

    def __init__(self, *, secret: str | bytes | None = None) -> None:
        self._secret = _secret(secret)
        # Cancels asked for the runs this store writes, as learned while saving
        # them: run id -> when it was asked.
        self._cancels: dict[str, float] = {}

    @property
    def signs(self) -> bool:
        """Whether this store signs its checkpoints (opened with a secret)."""
        return self._secret is not None

    def close(self) -> None:
        """Give back what the store holds (files, connections, threads);
        a store used again after opens them again."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- primitives (blocking) -----------------------------------------------

    def _write(
        self,
        checkpoints: tuple[Checkpoint, ...],
        blob_bytes: builtins.list[int],
        blobs: Mapping[str, bytes],
    ) -> None:
        """Store the checkpoints (with ``blob_bytes[i]`` bytes of new blobs
        each) and the new ``blobs``, all or nothing; sign them when the store
        has a secret; keep the run index up to date."""
        raise NotImplementedError

    def _read(self, checkpoint_id: str) -> Row | None:
        raise NotImplementedError

    def _read_latest(self, run_id: str) -> Row | None:
        raise NotImplementedError

    def _read_many(self, ids: builtins.list[str]) -> dict[str, Row]:
        """The rows of these checkpoints (those the store holds), by id; a
        store whose records hold several checkpoints reads each record once."""
        found = {cid: self._read(cid) for cid in ids}
        return {cid: row for cid, row in found.items() if row is not None}

    def _read_blobs(self, hashes: Iterable[str]) -> dict[str, bytes]:
        raise NotImplementedError

    def _rows(
        self, run_id: str | None, workflow: str | None
    ) -> tuple[builtins.list[Row], builtins.list[str]]:
        """Rows in save order, and a description of each damaged record skipped."""
        raise NotImplementedError

    def _rows_page(
        self, run_id: str, before: int | None, count: int
    ) -> tuple[builtins.list[Row], builtins.list[str], int | None]:
        """The run's rows saved just before the position ``before`` (from its
        newest when ``None``) — ``count`` records' worth, at least one row
        unless none is left — in save order; the damaged records skipped;
        and the position to read the next (older) page from (``None``: none
        left). A position is the store's own (a segment's sequence number)."""
        raise NotImplementedError

    def _runs(self, query: RunQuery) -> tuple[builtins.list[RunInfo], builtins.list[str]]:
        """The runs ``query`` lists, and a description of each damaged
        index record skipped."""
        raise NotImplementedError

    def _run_of_request(self, request_id: str) -> RunInfo | None:
        raise NotImplementedError

    def _run_info(self, run_id: str) -> RunInfo | None:
        raise NotImplementedError

    def _set_status(self, run_id: str, status: str, error: str | None) -> None:
        """Record the ending (and forget a cancel asked for the run)."""
        raise NotImplementedError

    def _request_cancel(self, run_id: str, at: float) -> bool:
        """Record a cancel asked ``at`` for the run, and return ``True``, only
        if the run's status is one of ``RUNNING_STATUSES`` (checked in the
        same transaction); otherwise record nothing and return ``False``."""
        raise NotImplementedError

    def _cancel_mark(self, run_id: str) -> float | None:
        """When a cancel was asked for the run, as stored (``None``: never)."""
        return self._cancels.get(run_id)

    def _answers(self, run_id: str, request_ids: builtins.list[str]) -> dict[str, str]:
        """Request id -> the checkpoint that answered it, for those answered."""
        raise NotImplementedError

    def _lease(self, run_id: str, holder: str) -> str | None:
        """Record ``holder`` as the run's, unless a live holder has it (then
        return that one); a holder whose process ended is replaced."""
        raise NotImplementedError

    def _release_lease(self, run_id: str, holder: str) -> None:
        raise NotImplementedError

    def _holder(self, run_id: str) -> str | None:
        """The run's live holder, read without taking the lease."""
        raise NotImplementedError

    def _run_ids(self, run_id: str | None, more_than: int) -> dict[str, builtins.list[str]]:
        """Checkpoint ids in save order of each run (or of one) that holds
        more than ``more_than`` of them."""
        raise NotImplementedError

    def _remove(self, ids: builtins.list[str]) -> None:
        """Delete these checkpoints (of one run), and every value no remaining
        checkpoint references; update the run's index entry."""
        raise NotImplementedError

    def _remove_run(self, run_id: str) -> int:
        """Delete a whole run (without reading its checkpoints, so a damaged
        run goes too); returns how many checkpoints it held."""
        raise NotImplementedError

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    async def _run_save(self, fn: Callable[..., T], *args: Any) -> T:
        """``_run`` for a save: a store whose calls run on threads lets a
        cancel go through only once the save has ended (what its caller does
        next — recording how its run ended, giving back its lease — must
        come after it; see ``Worker.run``)."""
        return await self._run(fn, *args)

    async def _breathe(self, busy: float) -> None:
        """Between the steps of a long deletion that held the store for
        ``busy`` seconds: let other writers in (stores shared between
        processes wait here)."""

    # -- the protocol ------------------------------------------------------------

    async def save(self, *checkpoints: Checkpoint) -> None:
        if checkpoints:
            # Encoding and signing run with the write, off the loop.
            await self._run_save(self._write_new, checkpoints)

    def _write_new(self, checkpoints: tuple[Checkpoint, ...]) -> None:
        blobs: dict[str, bytes] = {}
        blob_bytes: builtins.list[int] = []
        for cp in checkpoints:
            if not cp.id or "," in cp.id:  # (stores list a segment's ids joined by commas)
                raise CheckpointEncodeError(
                    f"checkpoint id {cp.id!r} of run {cp.run_id!r}: an id must be non-empty "
                    "and hold no comma"
                )
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
        return await self._open(await self._row(checkpoint_id, "load"))

    async def latest(self, run_id: str) -> Checkpoint | None:
        row = (
            None if _absent("latest", run_id=run_id) else await self._run(self._read_latest, run_id)
        )
        return None if row is None else await self._open(row)

    async def _open(self, row: Row) -> Checkpoint:
        blobs = await self._run(self._read_blobs, row.ref_list)
        return open_row(row, self._secret, blobs)

    async def _newest_first(
        self, run_id: str, damaged: builtins.list[str], budget: int | None = None
    ) -> AsyncGenerator[builtins.list[Row], None]:
        """The run's rows in pages, the newest page first (each in save
        order), the pages growing as reading goes on (with a ``budget``,
        only as far as about that many bytes of records a page); a damaged
        record skipped is described in ``damaged``."""
        before: int | None = None
        count = _FIRST_PAGE
        while True:
            rows, skipped, before = await self._run(self._rows_page, run_id, before, count)
            damaged += skipped
            grown = min(count * 4, _MAX_PAGE)
            if budget is not None and rows:
                read = sum(len(r.body) for r in rows)  # (what ``count`` records held)
                grown = max(1, min(grown, count * budget // max(read, 1)))
            yield rows
            if before is None:
                return
            count = grown

    async def _lineage(
        self, row: Row, after: str | None, budget: int | None = None
    ) -> AsyncGenerator[Row, None]:
        """The lineage of ``row`` within its run, newest first (``row``
        itself first), back to its first checkpoint or to ``after`` (not
        included); ``budget``: as ``_newest_first``."""
        wanted: str | None = row.id  # the next checkpoint of the lineage, going back
        if after == row.id:
            return
        # A parent is saved before its children: one pass back through the
        # run meets the lineage in order.
        async with aclosing(self._newest_first(row.run_id, [], budget)) as pages:
            async for page in pages:
                for record in reversed(page):
                    if record.id == wanted:
                        yield record
                        wanted = record.parent_id
                        if wanted is None or wanted == after:
                            return

    async def _row(self, checkpoint_id: str, call: str) -> Row:
        row = (
            None
            if _absent(call, checkpoint_id=checkpoint_id)
            else await self._run(self._read, checkpoint_id)
        )
        if row is None:
            raise CheckpointNotFoundError(f"no checkpoint {quoted(checkpoint_id)} in this store")
        return row

    def _outputs_in(self, record: Row) -> builtins.list[Any]:
        """The outputs one stored checkpoint holds (verified)."""
        found = verified_body(record, self._secret).get("outputs", [])
        if type(found) is not list:
            raise CheckpointIntegrityError(
                f"checkpoint {record.id!r}: its outputs are not a list ({type(found).__name__})"
            )
        return found

    async def outputs(self, checkpoint_id: str, *, after: str | None = None) -> builtins.list[Any]:
        """The outputs the run yielded up to ``checkpoint_id``, along its
        lineage within the run (a replayed branch's, not the ones it left),
        as JSON to show — they are never decoded into objects; no stored
        value is loaded. With ``after``, only those yielded after that
        checkpoint, which must be on the lineage (else
        ``CheckpointNotFoundError``): the run is read back from its newest
        records only as far as that checkpoint. (All of them at once: a
        page of a long run's is ``outputs_slice``.)"""
        _absent("outputs", after=after)
        row = await self._row(checkpoint_id, "outputs")
        chain: builtins.list[Row] = []
        async with aclosing(self._lineage(row, after)) as lineage:
            async for record in lineage:
                chain.append(record)
        wanted = chain[-1].parent_id if chain else row.id
        if after is not None and wanted != after:
            raise CheckpointNotFoundError(
                f"checkpoint {after!r} is not on the lineage of {quoted(checkpoint_id)} in run "
                f"{row.run_id!r}"
            )
        out: builtins.list[Any] = []
        for record in reversed(chain):
            out.extend(self._outputs_in(record))
        return out

    async def outputs_slice(
        self, checkpoint_id: str, offset: int = 0, limit: int | None = None
    ) -> tuple[int, builtins.list[Any]]:
        """How many outputs ``outputs(checkpoint_id)`` gives, and ``limit``
        of them (``None``: all the rest) from the ``offset``-th, oldest first
        from 0 — a negative ``offset`` counts from the newest (-200: the
        newest 200): ``(len(every), every[offset:][:limit])``.

        Only the outputs returned are kept: the lineage is read back in
        pages of a few MiB, each checkpoint's outputs counted and let go;
        with an ``offset`` from the oldest, the checkpoints holding the
        slice are then read again by id. Counting still reads (and
        verifies) every checkpoint of the lineage, one page at a time."""
        if isinstance(offset, bool) or isinstance(limit, bool) or (limit is not None and limit < 0):
            raise ValueError(
                f"outputs_slice takes a whole-number offset and a limit >= 0 (or None), got "
                f"offset={offset!r}, limit={limit!r}"
            )
        row = await self._row(checkpoint_id, "outputs_slice")
        counts: builtins.list[tuple[str, int]] = []  # the lineage's, newest first
        newest: builtins.list[builtins.list[Any]] = []  # (offset < 0) those it asks for
        total = 0
        async with aclosing(self._lineage(row, None, _PAGE_BYTES)) as lineage:
            async for record in lineage:
                found = self._outputs_in(record)
                if total < -offset:
                    newest.append(found)
                total += len(found)
                counts.append((record.id, len(found)))
        start = min(offset if offset >= 0 else max(0, total + offset), total)
        stop = total if limit is None else min(total, start + limit)
        if start >= stop:
            return total, []
        if offset < 0:  # (read already: the newest checkpoints' outputs)
            held = [output for found in reversed(newest) for output in found]
            first = total - len(held)
            return total, held[start - first : stop - first]
        wanted: builtins.list[tuple[str, int, int]] = []  # id, and its outputs' slice
        at = 0
        for cid, n in reversed(counts):
            if n and at + n > start and at < stop:
                wanted.append((cid, max(0, start - at), min(n, stop - at)))
            at += n
        out: builtins.list[Any] = []
        for part in range(0, len(wanted), _READ_BACK):
            chunk = wanted[part : part + _READ_BACK]
            rows = await self._run(self._read_many, [cid for cid, _, _ in chunk])
            for cid, lo, hi in chunk:
                stored = rows.get(cid)
                if stored is None:
                    raise CheckpointNotFoundError(
                        f"checkpoint {cid!r} of run {row.run_id!r} was deleted while its "
                        "outputs were read: ask again"
                    )
                out.extend(self._outputs_in(stored)[lo:hi])
        return total, out

    async def list(
        self,
        run_id: str | None = None,
        *,
        workflow: str | None = None,
        last: int | None = None,
    ) -> builtins.list[CheckpointInfo]:
        damaged: builtins.list[str] = []
        infos: builtins.list[CheckpointInfo] = []
        if last is None:
            if not _absent("list", run_id=run_id, workflow=workflow):
                rows, damaged = await self._run(self._rows, run_id, workflow)
                infos = [r.info for r in rows]
        else:
            _absent("list", run_id=run_id, workflow=workflow)
            if run_id is None or not isinstance(last, int) or isinstance(last, bool) or last < 0:
                raise ValueError(
                    f"last= lists a run's newest checkpoints: it needs run_id and a count "
                    f">= 0, got run_id={run_id!r}, last={last!r}"
                )
            if last and not _absent("list", run_id=run_id, workflow=workflow):
                # (pages of a few MiB, their bodies let go at once: checkpoints
                # holding large outputs are listed without holding them)
                pages = self._newest_first(run_id, damaged, _PAGE_BYTES)
                async with aclosing(pages):
                    async for page in pages:
                        infos[:0] = [r.info for r in page if workflow in (None, r.workflow)]
                        if len(infos) >= last:
                            break
            infos = infos[max(0, len(infos) - last) :]
        if damaged:
            warnings.warn(
                CheckpointWarning(
                    f"skipped {len(damaged)} damaged checkpoint record(s): {'; '.join(damaged)}"
                ),
                stacklevel=2,
            )
        return infos

    async def runs(
        self,
        *,
        workflow: str | None = None,
        signature: str | None = None,
        status: str | RunStatus | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> builtins.list[RunInfo]:
        if isinstance(status, RunStatus):
            status = status.value
        query = RunQuery(
            workflow=workflow, signature=signature, status=status, limit=limit, before=before
        )
        if _absent("runs", before=before):
            raise CheckpointNotFoundError(f"no run {quoted(before or '')} in this store (before=)")
        if _absent("runs", workflow=workflow, signature=signature):
            return []
        infos, damaged = await self._run(self._runs, query)
        if damaged:
            warnings.warn(
                CheckpointWarning(
                    f"skipped {len(damaged)} damaged run record(s): {'; '.join(damaged)}"
                ),
                stacklevel=2,
            )
        return infos

    async def find_request(self, request_id: str) -> RunInfo | None:
        return (
            None
            if _absent("find_request", request_id=request_id)
            else await self._run(self._run_of_request, request_id)
        )

    async def run_info(self, run_id: str) -> RunInfo | None:
        return (
            None if _absent("run_info", run_id=run_id) else await self._run(self._run_info, run_id)
        )

    async def request_cancel(self, run_id: str) -> bool:
        # A run going on holds its lease: one nobody holds runs nowhere (its
        # process ended without recording how) and would never hear the
        # cancel. (Read, not taken: a resume that comes meanwhile goes on.)
        if _absent("request_cancel", run_id=run_id) or await self.lease_holder(run_id) is None:
            return False
        return await self._run(self._request_cancel, run_id, time.time())

    def cancel_requested(self, run_id: str, since: float) -> bool:
        asked = self._cancels.get(run_id)
        return asked is not None and asked >= since

    async def cancel_asked(self, run_id: str, since: float) -> bool:
        asked = (
            None
            if _absent("cancel_asked", run_id=run_id)
            else await self._run(self._cancel_mark, run_id)
        )
        if asked is not None:
            self._cancels[run_id] = asked
        return asked is not None and asked >= since

    async def answers(self, run_id: str, request_ids: Iterable[str]) -> dict[str, str]:
        if isinstance(request_ids, (str, bytes)):
            raise TypeError(
                "answers: request_ids= takes a list of request ids, not "
                f"{a_value_type(request_ids)}"
            )
        wanted = [r for r in request_ids if not _absent("answers", request_id=r)]
        if _absent("answers", run_id=run_id):
            return {}
        return await self._run(self._answers, run_id, wanted) if wanted else {}

    async def lease(self, run_id: str, holder: str) -> str | None:
        return await self._run(self._lease, _named("lease", run_id), holder)

    async def release(self, run_id: str, holder: str) -> None:
        if not _absent("release", run_id=run_id):  # (never leased)
            await self._run(self._release_lease, run_id, holder)

    async def lease_holder(self, run_id: str) -> str | None:
        """Who holds the run now (``None``: nobody, or a process that has
        ended) -- read, not taken: asking never stands in the way of a call
        that takes the run at that moment, as taking and giving back would."""
        return (
            None
            if _absent("lease_holder", run_id=run_id)
            else await self._run(self._holder, run_id)
        )

    async def set_status(
        self, run_id: str, status: str | RunStatus, error: str | None = None
    ) -> None:
        if isinstance(status, RunStatus):  # (RunStatus.FAILED was "not one of ['failed', ...]")
            status = status.value
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"status must be one of {sorted(TERMINAL_STATUSES)}, not {status!r}")
        await self._run(self._set_status, _named("set_status", run_id), status, _storable(error))

    async def delete(self, checkpoint_id: str) -> None:
        row = await self._row(checkpoint_id, "delete")
        holder = await self._hold_for_deleting(row.run_id)  # (as delete_run: not cut from under)
        try:
            await self._run(self._remove, [checkpoint_id])
            try:
                gone = await self._run(self._run_info, row.run_id) is None
            except CheckpointIntegrityError:
                gone = False  # (its index record is there, damaged)
        finally:
            await self.release(row.run_id, holder)
        if gone:  # (its last checkpoint: the run went, and so does its cancel, as in delete_run)
            self._cancels.pop(row.run_id, None)

    async def delete_run(self, run_id: str) -> int:
        if _absent("delete_run", run_id=run_id):
            raise CheckpointNotFoundError(f"no run {quoted(run_id)} in this store")
        holder = await self._hold_for_deleting(run_id)
        try:
            removed = await self._run(self._remove_run, run_id)
        finally:
            await self.release(run_id, holder)
        # What the store learned of the run's cancel went with it (a server
        # deleting its runs for days would otherwise keep one mark for each
        # run asked to cancel that ended otherwise).
        self._cancels.pop(run_id, None)
        if not removed:
            raise CheckpointNotFoundError(f"no run {quoted(run_id)} in this store")
        return removed

    async def _hold_for_deleting(self, run_id: str) -> str:
        """Take the run while deleting from it: a run going on is refused,
        not cut from under it, and nothing continues the run meanwhile."""
        holder = new_holder(deleting=True)
        busy = await self.lease(run_id, holder)
        if busy is not None:
            raise CheckpointError(
                f"run {run_id!r} is running ({holding(busy)}): {STOP_FIRST}; nothing was deleted"
            )
        return holder

    async def prune(self, run_id: str | None = None, *, keep_last: int = 1) -> int:
        if not isinstance(keep_last, int) or isinstance(keep_last, bool) or keep_last < 1:
            raise ValueError(
                f"prune keeps at least one checkpoint per run (keep_last >= 1), got "
                f"keep_last={keep_last!r:.200}"
            )
        removed = 0
        damaged: builtins.list[str] = []
        keep_last = min(keep_last, MOST)  # (no run holds more)
        if _absent("prune", run_id=run_id):
            return 0
        # One run at a time: each removal is short, so writers never wait long.
        for run, ids in (await self._run(self._run_ids, run_id, keep_last)).items():
            doomed = ids[:-keep_last]
            started = time.perf_counter()
            try:
                await self._run(self._remove, doomed)
            except CheckpointIntegrityError as exc:  # the others are still pruned
                damaged.append(f"run {run}: {exc}")
                continue
            removed += len(doomed)
            await self._breathe(time.perf_counter() - started)
        if damaged:
            warnings.warn(
                CheckpointWarning(
                    f"did not prune {len(damaged)} damaged run(s) (delete_run removes one): "
                    + "; ".join(damaged)
                ),
                stacklevel=2,
            )
        return removed
