"""Where a run starts: what one ``run()`` or ``stream()`` call asked for
(``RunCall``), and the run it executes (``prepare``) — a new run from its
input, a run going on from a checkpoint (or a fork off one), or a run kept in
memory that the call answers — with the checks that an answer was not given
already (``not_answered``) and that a kept run did not go on elsewhere
(``not_gone_on``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._checkpoint import Checkpoint, CheckpointStore, answered_twice, going_on_from
from ._core import Backend, MessageTypeError, RunState, a_string, a_value_type, type_name
from ._exceptions import CheckpointEncodeError, CheckpointError, RequestError
from ._executor import refusal
from ._persistence import CheckpointConfig, apply_responses
from ._waiting import Suspended

if TYPE_CHECKING:
    from ._workflow import Workflow

__all__ = [
    "ExecutorRef",
    "Prepared",
    "RunCall",
    "not_answered",
    "not_gone_on",
    "prepare",
    "storable_input",
]

ExecutorRef = Any  # an Executor or its id
# The run to execute: (run id, state, checkpoint resumed from, its state
# hashes, the suspended run it continues).
Prepared = tuple[str, RunState, Checkpoint | None, dict[str, str] | None, Suspended | None]


# What a checkpoint= given that is not a string is told (run, get_state, update_state).
CHECKPOINT_ID = "checkpoint= takes a checkpoint id, a string"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCall:
    """What one ``run()`` or ``stream()`` call asked for."""

    input: Any
    responses: Mapping[str, Any] | None
    checkpoint: str | None
    checkpoints: CheckpointStore | CheckpointConfig | None
    backend: Backend | None
    context: Any
    max_supersteps: int | None
    interrupt_before: Iterable[ExecutorRef] | None
    interrupt_after: Iterable[ExecutorRef] | None
    fork: bool = False

    def __post_init__(self) -> None:
        # (an int key failed deep inside with "object of type 'int' has no
        # len()", and an int checkpoint with "'int' object has no attribute
        # 'isascii'")
        if isinstance(self.responses, Mapping):
            for request_id in self.responses:
                a_string(
                    request_id,
                    "responses maps request ids, which are strings, to values",
                    RequestError,
                )
        if self.checkpoint is not None:
            a_string(self.checkpoint, CHECKPOINT_ID, CheckpointError)


async def prepare(workflow: Workflow, call: RunCall, config: CheckpointConfig | None) -> Prepared:
    """The run to execute (see ``Prepared``)."""
    start = workflow.start
    codec = workflow.codec
    responses = call.responses
    if call.input is not None and (call.checkpoint is not None or responses is not None):
        raise RequestError(
            "pass an input to start a new run, or checkpoint=/responses= to continue one — not both"
        )
    if call.fork and call.checkpoint is None:
        raise CheckpointError("fork=True starts a branch off a checkpoint: pass checkpoint=")
    if call.checkpoint is not None:
        if config is None:
            raise CheckpointError(
                f"resuming from checkpoint {call.checkpoint!r} needs a store: pass checkpoints="
            )
        stored = await config.store.load(call.checkpoint)
        going_on_from(config.store, stored)
        codec.check(stored)
        run = codec.restore(stored)
        if responses is not None:
            if not call.fork:
                await not_answered(config.store, stored.run_id, responses)
            apply_responses(run, responses, workflow._executors)
            codec.storable(responses)  # (its type checked first: clearer)
        # Continued from its checkpoint: the copy of the run kept in memory
        # (waiting for the same answers) is superseded, not answerable
        # twice. A fork is a new run: the original still waits.
        if not call.fork:
            workflow._waiting.drop(stored.run_id)
        run_id = uuid.uuid4().hex if call.fork else stored.run_id
        if call.fork:  # (what its executors restored was that run's)
            run.forked_from = (stored.run_id, *run.forked_from)
        return run_id, run, stored, codec.hashes(stored), None
    if responses is not None:
        suspended = workflow._waiting.claim(responses)
        run = suspended.state.copy()  # (a failed run leaves the original's requests)
        try:
            if config is not None:  # another process may have answered through the store
                await not_answered(config.store, suspended.run_id, responses)
            parent = None
            if suspended.last_checkpoint is not None and config is not None:
                parent = await config.store.load(suspended.last_checkpoint)
                # Another run (a fork, a resume, a new run) may have used the
                # shared executors since: they go on (and check the answers)
                # as this run left them.
                codec.restore_shared(parent)
            elif suspended.shared:
                codec.restore_kept(suspended.shared)
            apply_responses(run, responses, workflow._executors)
            if config is not None:
                codec.storable(responses)
        except BaseException:
            workflow._waiting.put_back(suspended)  # nothing consumed
            raise
        hashes = codec.hashes(parent) if parent is not None else None
        return suspended.run_id, run, parent, hashes, suspended
    if call.input is None:
        raise MessageTypeError(
            f"workflow {workflow.name!r} needs an input message for its start executor "
            f"{start.id!r}; None is never a message"
        )
    if not start.accepts(call.input):
        raise MessageTypeError(
            f"the start executor {start.id!r} of workflow {workflow.name!r} has no handler "
            f"for the input, {a_value_type(call.input)} (it handles "
            f"{', '.join(type_name(t) for t in start.input_types)})",
            executor_id=start.id,
        )
    refused = refusal(start, "check_input", call.input)
    if refused is not None:
        raise MessageTypeError(
            f"the input of workflow {workflow.name!r} is refused by its start executor "
            f"{start.id!r}: {refused}",
            executor_id=start.id,
        )
    if config is not None:
        storable_input(workflow, call.input)
    run = RunState(inboxes={start.id: [("", call.input)]})
    return uuid.uuid4().hex, run, None, None, None


def storable_input(workflow: Workflow, value: Any) -> None:
    """``MessageTypeError``, naming where, for an input of a checkpointed run
    that a checkpoint could not hold (half a character, a type with no
    codec): the run failed at its first barrier, listed failed, nothing run."""
    try:
        workflow.codec.storable_input(value)
    except CheckpointEncodeError as exc:
        raise MessageTypeError(
            f"workflow {workflow.name!r} checkpoints its runs, and its input cannot be "
            f"stored: {exc}; nothing ran",
            executor_id=workflow.start.id,
        ) from None


async def not_gone_on(store: CheckpointStore, suspended: Suspended) -> None:
    """``RequestError`` if the run kept in memory went on elsewhere since
    (another process continued it): this copy waits at an older checkpoint,
    and answering it would silently branch off there."""
    here = suspended.last_checkpoint
    info = await store.run_info(suspended.run_id)
    if here is None or info is None or info.last_checkpoint == here:
        return
    raise RequestError(
        f"run {suspended.run_id!r} went on elsewhere since this workflow object kept it "
        f"waiting at checkpoint {here}: its latest checkpoint is {info.last_checkpoint}; "
        f"answer from there (run(responses=..., checkpoint={info.last_checkpoint!r})), or "
        f"pass checkpoint={here!r} to go on from where this copy waits"
    )


async def not_answered(store: CheckpointStore, run_id: str, responses: Mapping[str, Any]) -> None:
    """``RequestError`` if the store recorded an answer to one of these."""
    if not isinstance(responses, Mapping) or not responses:
        return  # (refused with its reason by apply_responses)
    answered = await store.answers(run_id, [r for r in responses if isinstance(r, str)])
    for request_id, checkpoint_id in answered.items():
        raise answered_twice(run_id, request_id, checkpoint_id)
