"""The barrier hook that writes a run's checkpoints: one per barrier (plus
the run's entry), each written before the next superstep (``sync``) or
batched beside the run (``async``); saves of an executor's progress within a
superstep; the run's lease (taken for a continuation by ``take_run``) and
ending; a cancel asked from elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Coroutine, Mapping
from dataclasses import astuple, replace
from typing import Any

from ._checkpoint import (
    RUNNING_STATUSES,
    Checkpoint,
    CheckpointStore,
    deleting,
    holding,
    new_holder,
)
from ._core import RunState, RunStatus, to_the_end
from ._exceptions import (
    CheckpointError,
    CheckpointLeaseLostError,
    CheckpointNotFoundError,
    RequestError,
)
from ._executor import Executor
from ._persistence import CheckpointConfig, RunCodec, body_refs

__all__ = [
    "ASYNC_BATCH_DELAY",
    "CANCELLED_HERE",
    "CANCELLED_ON_REQUEST",
    "CANCEL_POLL",
    "FORK_HINT",
    "RunRecorder",
    "new_checkpoint_id",
    "take_run",
]

# How a refusal to go on with a run held elsewhere ends; the CLI and the
# server put it in their own terms.
FORK_HINT = "fork it from a checkpoint (fork=True, stepgraph run --fork)"

# Why a cancelled run stopped, as its run index records it (``RunInfo.error``):
# asked from anywhere through the store, or stopped by the process running it.
CANCELLED_ON_REQUEST = (
    "cancelled on request: asked to stop through the store (stepgraph runs cancel, "
    "a server's cancel, or request_cancel)"
)
CANCELLED_HERE = "cancelled by the process running it (Ctrl-C, SIGTERM, or its caller cancelled it)"

# With async durability, how long queued checkpoints may wait to share a
# transaction (bounds what a crash can lose beyond the sync guarantee).
ASYNC_BATCH_DELAY = 0.005


# -- the barrier hook ---------------------------------------------------------------


def new_checkpoint_id() -> str:
    """A checkpoint id of its own (for a checkpoint written outside a run)."""
    return _CheckpointIds().next()


class _CheckpointIds:
    """Checkpoint ids: 32 hex digits, time-ordered (ids sort by creation and
    index inserts append rather than scatter), then 32 random bits drawn per
    run and a per-run counter, against collisions between processes."""

    __slots__ = ("_count", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(4).hex()
        self._count = 0

    def next(self) -> str:
        self._count += 1
        return f"{time.time_ns():016x}{self._prefix}{self._count & 0xFFFFFFFF:08x}"


# How often a run whose superstep lasts long asks the store for a cancel.
CANCEL_POLL = 0.5


class RunRecorder:
    """Writes the run's checkpoints (the core's ``BarrierHook``)."""

    def __init__(
        self,
        *,
        codec: RunCodec,
        config: CheckpointConfig,
        run_id: str,
        parent_id: str | None,
        state_hashes: dict[str, str] | None = None,
        stored: set[str] | None = None,
        skip_entry: bool = False,
        parent: Checkpoint | None = None,
        answering: tuple[str, ...] = (),
        holder: str | None = None,
        leased: bool = False,
    ) -> None:
        self._codec = codec
        self._store = config.store
        self._async = config.durability == "async"
        self.run_id = run_id
        self.last_id = parent_id
        self._hashes = dict(state_hashes or {})
        self._stored = set(stored or ())  # blob hashes the store already holds
        self._skip_entry = skip_entry
        self._ids = _CheckpointIds()
        # Async durability: checkpoints wait in ``_queue`` for the batching
        # delay (``_timer``), then ``_writer`` saves them; a failed write is
        # kept in ``_error`` and raised at the next barrier or at close.
        # ``_due`` is when the oldest queued checkpoint's delay ends: a barrier
        # past it writes the queue itself, because handlers that never yield
        # (CPU-bound work) keep the loop from running the timer or the writer.
        self._queue: list[Checkpoint] = []
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closing = False
        self._failed = False  # a write failed: the run fails, nothing more is written
        self._started = time.time()  # a cancel asked for before this is not for this run
        # The newest checkpoint of the run: what progress saved within a
        # superstep builds on (the state at the last barrier).
        self._base = parent if skip_entry else None
        # The requests this continuation answers: recorded with its entry
        # checkpoint, which the store refuses if another answer came first.
        self._answering = answering
        self.answered_at: str | None = None  # the checkpoint that recorded them
        # The run's lease: taken already (a continuation: ``leased``), or
        # taken with the first save and given back with the last (or alone).
        self._holder = holder
        self.trace: Any = None  # the run's trace, when traced (checkpoint metrics, link)
        self._leased = leased
        self.released = holder is None
        self._progress_lock: asyncio.Lock | None = None
        # Watching the store for a cancel while a superstep runs long: a
        # timer (most runs end before it fires), and a task only to ask.
        self._watched: asyncio.Task[Any] | None = None
        self._watch_timer: asyncio.TimerHandle | None = None
        self._asking: asyncio.Task[None] | None = None
        self._seen = -1  # barriers counted when the timer last fired
        self._stopped_run = False
        self._barriers = 0
        # The store refused a save: another process took the run, or answered
        # first what this continuation answers.
        self._lost = False
        # The save of the checkpoint that ends the run (``_save_last``).
        self._final_save: asyncio.Future[None] | None = None

    async def barrier(self, run: RunState, written: set[str] | None) -> None:
        self._barriers += 1
        if written is None and self._skip_entry:
            return
        body, blobs = self._codec.body(run, self._hashes, written, run_id=self.run_id)
        if self.trace is not None:  # (a resume in another process links to this run)
            body["trace"] = self.trace.link()
        fresh: dict[str, bytes] = {}
        refs = body_refs(body)
        if refs:
            stored = self._stored
            fresh = {h: blobs[h] for h in refs if h not in stored and h in blobs}
        checkpoint = self._codec.checkpoint(
            run, body, refs, fresh, id=self._ids.next(), run_id=self.run_id, parent=self.last_id
        )
        if self._answering:
            checkpoint.answered, self._answering = self._answering, ()
            self.answered_at = checkpoint.id
        if not self._leased and self._holder is not None:
            checkpoint.holder, self._leased = self._holder, True
        self.last_id = checkpoint.id
        self._base = checkpoint
        if fresh:
            self._stored.update(fresh)
        if self._async and not checkpoint.answered and self._error is None:
            if self._enqueue(checkpoint):  # (the common case, without a coroutine of its own)
                await self._flush_now(checkpoint)
            return
        await self._put(checkpoint)

    async def progress(
        self, executor_id: str, executor: Executor, usage: Mapping[str, Any]
    ) -> None:
        """Save a checkpoint within a superstep: the run as at the last
        barrier, but with this executor's snapshot as it is now (and the
        tokens counted so far). A run resumed from it re-runs the superstep,
        and the executor finds in its snapshot what it had done."""
        base = self._base
        if base is None or self._failed:
            return  # nothing to build on yet
        if self._progress_lock is None:
            self._progress_lock = asyncio.Lock()
        async with self._progress_lock:  # one at a time: each builds on the last
            base = self._base
            assert base is not None
            h, data, held = self._codec.snapshot_blob(executor_id, executor)
            snapshots = {**base.body.get("snapshots", {}), executor_id: h}
            body = {**base.body, "snapshots": snapshots}
            body.pop("outputs", None)  # (the barrier's own: counted there)
            parts = {e: p for e, p in base.body.get("parts", {}).items() if e != executor_id}
            if held:
                parts[executor_id] = sorted(held)
            body.pop("parts", None)
            if parts:
                body["parts"] = parts
            if usage:
                body["usage"] = {path: list(astuple(u)) for path, u in usage.items()}
            written = {h: data, **held}
            fresh = {k: v for k, v in written.items() if k not in self._stored}
            checkpoint = replace(
                base,
                id=self._ids.next(),
                run_id=self.run_id,
                answered=(),
                holder=None,
                release=False,
                signed=False,
                parent_id=self.last_id,
                created_at=time.time(),
                body=body,
                refs=body_refs(body),
                blobs=fresh,
            )
            self.last_id = checkpoint.id
            self._base = checkpoint
            self._stored.update(fresh)
            await self._put(checkpoint)

    async def _put(self, checkpoint: Checkpoint) -> None:
        """Save now (sync durability, or a checkpoint that records answers:
        the store must refuse a second answer before any handler runs), or
        queue for the batching writer."""
        if not self._async or checkpoint.answered:
            if checkpoint.status in RUNNING_STATUSES:
                await self._save(checkpoint)
            else:
                await self._save_last(self._save(checkpoint))
            return
        if self._error is not None:
            self._raise_error()
        if self._enqueue(checkpoint):
            await self._flush_now(checkpoint)

    async def _flush_now(self, last: Checkpoint | None) -> None:
        """Write the queue, ``last`` the newest in it (if any): holding the
        run's last checkpoint, as ``_put`` does with ``sync`` durability."""
        if last is None or last.status in RUNNING_STATUSES:
            await self._flush()
        else:
            await self._save_last(self._flush())

    async def _save_last(self, saving: Coroutine[Any, Any, None]) -> None:
        """Write the run's last checkpoint to its end, whatever cancels the
        run meanwhile: once it is stored, it says how the run ended (see
        ``_record``)."""
        self._final_save = asyncio.ensure_future(saving)
        await asyncio.shield(self._final_save)

    def _enqueue(self, checkpoint: Checkpoint) -> bool:
        """Queue for the batching writer; true when the queue is due now."""
        now = time.monotonic()
        if not self._queue:
            self._due = now + ASYNC_BATCH_DELAY
        self._queue.append(checkpoint)
        if now >= self._due:
            return True  # the loop had no turn to write them: the caller does
        if self._timer is None and self._writer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(ASYNC_BATCH_DELAY, self._start_writer, loop)
        # else: a pending or running write takes this one with its batch
        return False

    def _start_writer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._writer = loop.create_task(self._write_queued())
        self._writer.add_done_callback(self._writer_done)

    def _writer_done(self, writer: asyncio.Task[None]) -> None:
        if self._writer is not writer:
            return  # already handled (by close)
        self._writer = None
        if not writer.cancelled() and writer.exception() is not None:
            self._error = writer.exception()
            self._failed = True
        elif self._queue and self._timer is None and not self._closing:
            loop = writer.get_loop()  # queued while the write ran
            self._timer = loop.call_later(ASYNC_BATCH_DELAY, self._start_writer, loop)

    async def _write_queued(self) -> None:
        while self._queue and not self._failed:
            batch, self._queue = self._queue, []
            try:
                await self._save(*batch)
            except BaseException:
                self._failed = True
                raise
        # After a failed write nothing more is written: the checkpoints still
        # queued would refer to parents (and values) that were never stored.
        self._queue.clear()

    async def _save(self, *checkpoints: Checkpoint) -> None:
        """Save, turning a store's own failure (a full disk, a lost
        connection) into a ``CheckpointError`` that fails the run."""
        started = time.perf_counter()
        try:
            await self._store.save(*checkpoints)
        except CheckpointLeaseLostError:
            self._lost = True  # the run is another process's now: record nothing more
            raise
        except RequestError:
            # An answer this continuation brings was recorded first by another
            # (its entry, refused): nothing of it was stored, and how the run
            # stands is the other's to say.
            self._lost = True
            raise
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"writing checkpoints failed: {type(exc).__name__}: {exc}"
            ) from exc
        if self.trace is not None:
            size = sum(len(b) for cp in checkpoints for b in cp.blobs.values())
            self.trace.checkpoint_written(time.perf_counter() - started, size, len(checkpoints))

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if isinstance(error, CheckpointError):
            raise error
        raise CheckpointError(f"writing checkpoints failed: {error!r}") from error

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Every ``CANCEL_POLL`` seconds: if no barrier came meanwhile (a long
        superstep — an agent streaming, a slow tool), ask the store whether
        the run was asked to stop, and if so cancel ``task``; barriers learn
        of it for free."""
        self._watched = task
        self._watch_timer = task.get_loop().call_later(CANCEL_POLL, self._look)

    def _look(self) -> None:
        task = self._watched
        if task is None:
            return
        if self._barriers != self._seen:
            self._seen = self._barriers
            self._watch_timer = task.get_loop().call_later(CANCEL_POLL, self._look)
        else:
            self._watch_timer = None
            self._asking = task.get_loop().create_task(self._ask())

    async def _ask(self) -> None:
        try:
            asked = await self._store.cancel_asked(self.run_id, self._started)
        except Exception:
            asked = False  # a store failing now: the next barrier's write will say so
        task, self._asking = self._watched, None
        if task is None:
            return  # (the run stopped watching meanwhile)
        if asked:
            self._stopped_run = True
            task.cancel()
        else:
            self._watch_timer = task.get_loop().call_later(CANCEL_POLL, self._look)

    def unwatch(self) -> bool:
        self._watched = None
        timer, self._watch_timer = self._watch_timer, None
        if timer is not None:
            timer.cancel()
        asking, self._asking = self._asking, None
        if asking is not None:
            asking.cancel()
        return self._stopped_run

    def cancel_requested(self) -> bool:
        """Whether the run was asked to stop from elsewhere (``request_cancel``):
        what the store learned while writing this run's checkpoints, no I/O."""
        return self._store.cancel_requested(self.run_id, self._started)

    async def close(self, outcome: RunStatus, error: BaseException | None) -> RunStatus | None:
        """Flush queued checkpoints (async durability), then record a failed
        or cancelled ending in the store's run index. Returns how the run
        ended after all when it was cancelled only once its last checkpoint
        was being stored (that checkpoint's status), else ``None``."""
        self._closing = True
        last = self._queue[-1] if self._queue else None
        recorded = outcome in (RunStatus.FAILED, RunStatus.CANCELLED)
        if last is not None and not recorded and self._leased and self._holder is not None:
            # The lease goes back with the last write. (Not when how the run
            # ended is recorded after it: the run is this process's until then.)
            last.holder, last.release, self.released = self._holder, True, True
        try:
            try:
                await self._flush_now(last)
            except BaseException:
                await self._record(RunStatus.FAILED, "writing checkpoints failed")
                raise
            if error is not None:
                reason: str | None = str(error)
            elif outcome is RunStatus.CANCELLED:  # (asked from elsewhere, or stopped here)
                reason = CANCELLED_ON_REQUEST if self.cancel_requested() else CANCELLED_HERE
            else:
                reason = None
            return await self._record(outcome, reason)
        finally:
            await self.release()  # last: how the run ended is recorded first

    @property
    def holds_lease(self) -> bool:
        """Whether this recorder holds the run's lease still."""
        return not self.released and self._leased and self._holder is not None

    async def release(self) -> None:
        """Give the run's lease back, if this recorder holds it still."""
        holder = self._holder
        if not self.holds_lease or holder is None:
            return
        self.released = True
        with contextlib.suppress(Exception):  # a store failing now: the lease dies with us
            await self._store.release(self.run_id, holder)

    async def _record(self, outcome: RunStatus, error: str | None) -> RunStatus | None:
        if outcome not in (RunStatus.FAILED, RunStatus.CANCELLED) or self.last_id is None:
            return None  # a checkpoint already says how the run stands
        if self._lost:
            return None  # (not ours to record: another process has the run)
        # Only a record for listings: a store failing now must not mask how
        # the run really ended (that error, or cancellation).
        with contextlib.suppress(Exception):
            if outcome is RunStatus.CANCELLED and self._final_save is not None:
                # Cancelled while the checkpoint that ends the run was being
                # saved (Ctrl-C then): once it is stored, it says how the run
                # stands (idle, waiting for answers, paused).
                try:
                    await self._final_save
                except Exception:
                    pass  # not stored: the run is marked cancelled below
                else:
                    assert self._base is not None  # (the checkpoint just saved)
                    return RunStatus(self._base.status)
            await self._store.set_status(self.run_id, outcome.value, error)
        return None

    async def _flush(self) -> None:
        """Write everything queued now, after any write in flight."""
        if self._timer is not None:
            self._timer.cancel()  # no need to wait for more: write them now
            self._timer = None
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer})  # never cut a save short
            self._writer_done(writer)
            if self._timer is not None:  # re-armed for the rest: written below
                self._timer.cancel()
                self._timer = None
        if self._error is not None:
            self._raise_error()
        await self._write_queued()


async def take_run(store: CheckpointStore, run_id: str, parent: Checkpoint) -> str:
    """Lease the run for this call; ``CheckpointError`` if it is running or
    being deleted, ``CheckpointNotFoundError`` if the checkpoint's run was
    deleted since the checkpoint was loaded."""
    holder = new_holder()
    try:
        # Awaited to its end: cancelled while the store takes it, the call
        # gives the lease back below (else it would hold the run until this
        # process ends).
        busy = await to_the_end(store.lease(run_id, holder))
        if busy is not None and deleting(busy):
            raise CheckpointError(f"run {run_id!r} is being deleted ({holding(busy)})")
        if busy is not None:
            raise CheckpointError(
                f"run {run_id!r} is being continued elsewhere ({holding(busy)}); a run "
                f"goes on in one place at a time — wait for it to stop, or {FORK_HINT}"
            )
        if await store.run_info(parent.run_id) is None:
            raise CheckpointNotFoundError(
                f"run {parent.run_id!r} was deleted, checkpoint {parent.id!r} with it"
            )
    except BaseException:
        # (not taken, or another holds it: giving back is then a no-op)
        with contextlib.suppress(Exception):
            await to_the_end(store.release(run_id, holder))
        raise
    return holder
