"""The ``stepgraph`` command. For now: ``stepgraph demo``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ._core import Event, OutputEvent, StatusEvent, WarningEvent

__all__ = ["main"]


def _describe(event: Event) -> str:
    where = ""
    if event.superstep is not None:
        where += f" step={event.superstep}"
    if event.executor_id is not None:
        where += f" executor={event.executor_id}"
    extra = ""
    if isinstance(event, OutputEvent):
        extra = f" data={event.data!r}"
    elif isinstance(event, WarningEvent):
        extra = f" {event.message}"
    elif isinstance(event, StatusEvent):
        extra = f" {event.status.value}"
    return f"{event.kind:<20}{where}{extra}"


async def _demo(topic: str) -> int:
    from .demo import build

    workflow = build()
    outputs: list[object] = []
    async for event in workflow.stream(topic):
        print(_describe(event))
        if isinstance(event, OutputEvent):
            outputs.append(event.data)
    print()
    for output in outputs:
        print(f"output: {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepgraph", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the bundled review-pipeline example")
    demo.add_argument("topic", nargs="?", default="stepgraph", help="what the writer drafts")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(_demo(args.topic))
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse exits
    return 2


if __name__ == "__main__":
    sys.exit(main())
