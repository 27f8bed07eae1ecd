"""The ``stepgraph`` command. For now: ``stepgraph demo`` (in-process backend,
SQLite checkpoints)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ._core import Event, OutputEvent, RunStartedEvent, StatusEvent, WarningEvent

__all__ = ["main"]


def _describe(event: Event) -> str:
    where = ""
    if event.superstep is not None:
        where += f" step={event.superstep}"
    if event.executor_id is not None or event.workflow_path:
        where += f" executor={event.path}"
    extra = ""
    if isinstance(event, OutputEvent):
        extra = f" data={event.data!r}"
    elif isinstance(event, WarningEvent):
        extra = f" {event.message}"
    elif isinstance(event, StatusEvent):
        extra = f" {event.status.value}"
    return f"{event.kind:<20}{where}{extra}"


async def _demo(topic: str, store_path: str | None) -> int:
    from ._checkpoint import SqliteCheckpointStore
    from .demo import build

    path = Path(store_path) if store_path else Path(tempfile.mkdtemp()) / "demo.sqlite"
    workflow = build()
    outputs: list[object] = []
    with SqliteCheckpointStore(path) as store:
        run_id = ""
        async for event in workflow.stream(topic, checkpoints=store):
            print(_describe(event))
            if isinstance(event, RunStartedEvent):
                run_id = event.run_id
            if isinstance(event, OutputEvent):
                outputs.append(event.data)
        saved = await store.list(run_id)
    print()
    for output in outputs:
        print(f"output: {output}")
    print(f"checkpoints: {len(saved)} saved to {path} (run {run_id})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepgraph", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the bundled review-pipeline example")
    demo.add_argument("topic", nargs="?", default="stepgraph", help="what the writer drafts")
    demo.add_argument(
        "--store", metavar="PATH", help="SQLite checkpoint file (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(_demo(args.topic, args.store))
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
