"""The runs a workflow object keeps in memory while they wait for answers,
for ``run(responses=...)`` without a checkpoint: which run an answer is
for, what was answered already, and the oldest let go past a limit."""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._checkpoint import answered_twice
from ._core import Event, PendingRequest, RunState, WarningEvent, quoted
from ._exceptions import RequestError

__all__ = ["SUSPENDED_LIMIT", "Suspended", "WaitingRuns"]

# Runs waiting for answers that a workflow object keeps for run(responses=...).
SUSPENDED_LIMIT = 1_000


@dataclass(slots=True)
class Suspended:
    """A run that went idle with open requests, kept for ``run(responses=...)``."""

    run_id: str
    state: RunState
    last_checkpoint: str | None
    # Without a checkpoint to restore them from: the shared executors'
    # snapshots as this run left them (encoded, with their parts).
    shared: dict[str, tuple[bytes, dict[str, bytes]]] | None = None
    # Its run span's ids (a traced run): the continuation's span links to it.
    trace: dict[str, str] | None = None


class WaitingRuns:
    """One workflow object's runs waiting in memory, oldest first, and the
    requests answered through it (their run, and the checkpoint that
    recorded the answer when there is one)."""

    def __init__(self) -> None:
        self._runs: OrderedDict[str, Suspended] = OrderedDict()
        self._answered: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        # Claimed runs a call is continuing now, with the ids it answers: an
        # answer for one of them meanwhile is refused, saying so.
        self._going: dict[str, tuple[Suspended, tuple[str, ...]]] = {}
        # Claimed runs another call went on with from their checkpoint
        # meanwhile: the claim's copy is not kept again if its call fails.
        self._superseded: set[str] = set()
        # Runs let go past the limit since ``let_go`` was last asked.
        self._dropped: list[str] = []
        # One workflow's runs may go on in several threads, each with its loop.
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # A copy (a Ray actor's, with the workflow it belongs to) takes what
        # waits, and a lock of its own.
        with self._lock:
            return {k: v for k, v in vars(self).items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = threading.Lock()

    @property
    def pending_requests(self) -> list[PendingRequest]:
        with self._lock:
            return [r for s in self._runs.values() for r in s.state.requests.values()]

    def keep(self, suspended: Suspended, emit: Callable[[Event], None]) -> None:
        """Keep a run that waits for answers; past the limit, let the oldest
        go (and say so)."""
        with self._lock:
            self._runs.pop(suspended.run_id, None)
            if not self._unclaim(suspended):
                return
            self._runs[suspended.run_id] = suspended
            dropped = None
            if len(self._runs) > SUSPENDED_LIMIT:
                _, dropped = self._runs.popitem(last=False)
                self._dropped.append(dropped.run_id)
        if dropped is not None:
            # The run that pushed it out is told that one was, not which: it
            # may serve another user, and nothing of one run is another's to
            # see. Which run, and where to answer it, goes to the process.
            emit(
                WarningEvent(
                    message=f"this workflow object keeps at most {SUSPENDED_LIMIT} runs waiting "
                    "for answers in memory, so the oldest of them no longer waits here"
                )
            )
            warnings.warn(_forgotten(dropped, SUSPENDED_LIMIT), RuntimeWarning, stacklevel=2)

    def put_back(self, suspended: Suspended) -> None:
        """A claimed run whose answers were refused: it waits as before."""
        with self._lock:
            if self._unclaim(suspended):
                self._runs[suspended.run_id] = suspended

    def _unclaim(self, suspended: Suspended) -> bool:
        """End the claim on a run given back; False if it was ``suspended``'s
        claim and the run went on from its checkpoint meanwhile (lock held)."""
        going = self._going.pop(suspended.run_id, None)
        superseded = suspended.run_id in self._superseded
        self._superseded.discard(suspended.run_id)
        return not (superseded and going is not None and going[0] is suspended)

    def settled(self, run_id: str) -> None:
        """The call continuing a claimed run returned (the run waits again
        through ``keep``, if it does)."""
        with self._lock:
            self._going.pop(run_id, None)
            self._superseded.discard(run_id)

    def drop(self, run_id: str) -> None:
        """The run went on from a checkpoint: this copy is superseded (and
        so is the one a call has claimed, should that call give it back)."""
        with self._lock:
            self._runs.pop(run_id, None)
            if run_id in self._going:
                self._superseded.add(run_id)

    def let_go(self, run_id: str) -> list[str]:
        """The runs no longer kept here since last asked: those let go past
        the limit, and ``run_id`` (whose call ends) unless it waits — so
        that what was kept for them elsewhere (a sub-workflow's waiting
        child runs) goes too."""
        with self._lock:
            gone = [*self._dropped, run_id]
            self._dropped = []
            return [r for r in gone if r not in self._runs and r not in self._going]

    def answered(self, request_ids: Iterable[str], run_id: str, at: str | None) -> None:
        """These requests were answered in run ``run_id`` (recorded at
        checkpoint ``at``, if stored)."""
        with self._lock:
            for request_id in request_ids:
                self._answered[request_id] = (run_id, at)
            while len(self._answered) > 10 * SUSPENDED_LIMIT:
                self._answered.popitem(last=False)

    def claim(self, responses: Mapping[str, Any]) -> Suspended:
        """Take the run that opened these requests (so a concurrent call
        cannot answer it too); ``RequestError`` unless exactly one did."""
        if not isinstance(responses, Mapping) or not responses:
            raise RequestError("responses must be a non-empty mapping of request id to value")
        with self._lock:
            return self._claim(responses)

    def _claim(self, responses: Mapping[str, Any]) -> Suspended:
        runs = self._runs.values()
        owners = {s.run_id for s in runs for rid in responses if rid in s.state.requests}
        if not owners:
            for request_id in responses:
                _refuse_going(request_id, self._going.values())
                answered_in = self._answered.get(request_id)
                if answered_in is not None:
                    run_id, at = answered_in
                    if at is not None:  # (recorded in that checkpoint)
                        raise answered_twice(run_id, request_id, at)
                    raise RequestError(
                        f"request {request_id!r} of run {run_id!r} was already answered"
                    )
            open_ids = [r.request_id for s in runs for r in s.state.requests.values()]
            shown = ", ".join(open_ids[:10]) or "none"
            if len(open_ids) > 10:
                shown += f", ... ({len(open_ids)} in all)"
            unknown = quoted(next(iter(responses)))
            raise RequestError(
                f"unknown request id {unknown}: no run this workflow keeps in memory has it "
                f"open (open: {shown}); to answer a stored run's requests pass checkpoint= "
                "(and checkpoints=)"
            )
        if len(owners) > 1:
            shared = [r for r in responses if sum(r in s.state.requests for s in runs) > 1]
            if shared:  # (ids are unique within a run only: a fixed request_id=, a fork)
                raise RequestError(
                    f"request id {shared[0]!r} is open in several runs ({sorted(owners)}); "
                    "name the run: pass checkpoint= (its last_checkpoint) and checkpoints=, "
                    "or let each run's request have its own id"
                )
            raise RequestError(
                f"the responses answer requests of different runs ({sorted(owners)}); answer "
                "one run per call"
            )
        claimed = self._runs.pop(owners.pop())
        self._going[claimed.run_id] = (claimed, tuple(responses))
        return claimed


def _refuse_going(request_id: str, going: Iterable[tuple[Suspended, tuple[str, ...]]]) -> None:
    """``RequestError`` if ``request_id`` is open in a run another call is
    continuing right now (it is not unknown: it waits for that call)."""
    for suspended, answering in going:
        if request_id not in suspended.state.requests:
            continue
        run_id = suspended.run_id
        if request_id in answering:
            raise RequestError(
                f"request {request_id!r} of run {run_id!r} is being answered right now by "
                "another call; a request is answered once"
            )
        raise RequestError(
            f"request {request_id!r} is open in run {run_id!r}, which another call is "
            f"continuing right now (answering {', '.join(map(repr, answering))}); answer it "
            "once that call returns"
        )


def _forgotten(dropped: Suspended, limit: int) -> str:
    """Past ``limit`` runs waiting for answers, the oldest is no longer kept
    in memory: say which, and where its requests can still be answered."""
    ids = list(dropped.state.requests)
    if dropped.last_checkpoint is not None:
        still = (
            f"answer them from its checkpoint with run(checkpoint={dropped.last_checkpoint!r}, "
            "responses=...)"
        )
    else:
        still = "they are lost: that run had no checkpoint store"
    return (
        f"run {dropped.run_id} still had open requests {ids}, but this workflow object "
        f"keeps at most {limit} runs waiting for answers in memory, so {still}"
    )
