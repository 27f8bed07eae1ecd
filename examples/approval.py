"""A human approval step, answered from another process.

Run without arguments, it starts a run that stops waiting for approval, then
answers it from a second Python process through the SQLite checkpoint — as a
reviewer would, later, on another machine:

    python examples/approval.py                           # both steps
    python examples/approval.py start runs.sqlite         # step 1 only
    python examples/approval.py answer runs.sqlite CHECKPOINT REQUEST yes   # or no

The workflow also runs from the command line, which stores its checkpoints and
prints the command that answers:

    stepgraph run examples.approval:build --input '{"who": "dana", "amount": 420}'
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import stepgraph as sg


@dataclass(frozen=True)
class Expense:
    who: str
    amount: float


@dataclass(frozen=True)
class Approve:
    expense: Expense


class Manager(sg.Executor):
    @sg.handler
    async def review(self, expense: Expense, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        if expense.amount <= 100:
            await ctx.yield_output(f"auto-approved {expense.amount:.2f} for {expense.who}")
        else:
            await ctx.request_info(Approve(expense), bool)

    @sg.response_handler
    async def decided(self, ask: Approve, ok: bool, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        verdict = "approved" if ok else "rejected"
        await ctx.yield_output(f"{verdict} {ask.expense.amount:.2f} for {ask.expense.who}")


def build(store: sg.CheckpointStore | None = None) -> sg.Workflow:
    """The workflow; with ``store``, it checkpoints there (the CLI passes its own)."""
    return sg.WorkflowBuilder(start=Manager("manager"), name="expenses", checkpoints=store).build()


async def start(path: str) -> tuple[str, str]:
    with sg.SqliteCheckpointStore(path) as store:
        result = await build(store).run(Expense("dana", 420.0))
    [pending] = result.pending_requests
    print(f"waiting for approval of {pending.request.expense.amount:.2f}")
    assert result.last_checkpoint is not None
    return result.last_checkpoint, pending.request_id


async def answer(path: str, checkpoint: str, request_id: str, ok: bool) -> None:
    # create=False: a mistyped path is an error, not a new empty store.
    with sg.SqliteCheckpointStore(path, create=False) as store:
        result = await build(store).run(responses={request_id: ok}, checkpoint=checkpoint)
    for line in result.outputs:
        print(line)


USAGE = """usage: python examples/approval.py                  (both steps)
       python examples/approval.py start PATH
       python examples/approval.py answer PATH CHECKPOINT REQUEST yes|no"""


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"] and len(argv) == 2:
        checkpoint, request_id = asyncio.run(start(argv[1]))
        print(f"answer with: python {sys.argv[0]} answer {argv[1]} {checkpoint} {request_id} yes")
    elif argv[:1] == ["answer"] and len(argv) == 5 and argv[4].lower() in ("yes", "no"):
        asyncio.run(answer(argv[1], argv[2], argv[3], argv[4].lower() == "yes"))
    elif not argv:
        with tempfile.TemporaryDirectory() as folder:
            path = str(Path(folder) / "expenses.sqlite")
            checkpoint, request_id = asyncio.run(start(path))
            here = Path(__file__).resolve()
            command = [sys.executable, str(here), "answer", path, checkpoint, request_id, "yes"]
            return subprocess.run(command).returncode
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except sg.StepgraphError as error:  # (answered already, no such checkpoint or file...)
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        sys.exit(130)
