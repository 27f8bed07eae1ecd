"""Showing a run: JSON lines, and the live view.

User text — ids, inputs, outputs, error messages — is never read as rich
markup: it goes into ``Text`` objects, so ``[/x]`` or ``list[str]`` print as
they are."""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .._core import (
    Event,
    ExecutorCompletedEvent,
    ExecutorFailedEvent,
    ExecutorInvokedEvent,
    OutputEvent,
    RequestInfoEvent,
    StatusEvent,
    SuperstepStartedEvent,
    WarningEvent,
    jsonable,
    readable,
)

__all__ = [
    "LiveView",
    "RunConsole",
    "event_json",
    "event_record",
    "json_printable",
    "jsonable",
    "printable",
    "say",
    "shown",
]


# Control characters other than newline and tab: a terminal obeys them
# (ESC starts a sequence that recolours it, moves the cursor, sets its title).
# So it does the bidirectional overrides, embeddings and isolates (U+202A-E,
# U+2066-9): one in an output or an id would reverse the rest of its line —
# the printed command to answer a request included ("Trojan Source").
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escaped(found: re.Match[str]) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# What ``json.dumps(..., ensure_ascii=False)`` leaves raw that a terminal
# obeys (it escapes only the characters below U+0020): DEL, the C1 controls
# (U+009B starts a sequence as ESC [ does) and the bidirectional controls.
_RAW_IN_JSON = re.compile(r"[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def json_printable(text: str) -> str:
    """JSON text with what a terminal would obey written as ``\\uXXXX``
    escapes — still the same JSON (they only occur inside strings)."""
    return _RAW_IN_JSON.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def printable(text: str) -> str:
    """``text`` with control characters (a handler's error message holding
    ``\x1b[31m``) and lone surrogates (which no terminal encoding can
    print) written as escapes."""
    return readable(_CONTROL.sub(_escaped, text))  # (one pass; the same str when none)


class RunConsole(Console):
    """Standard output for a run: when it is closed under the run (its
    reader went away, ``| head -1``) it raises ``BrokenPipeError`` — rich
    would end the process with 1 and nothing said — so the run's session
    can say what became of the run."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "standard output was closed")


def say(console: Console, *parts: str | tuple[str, str], style: str | None = None) -> None:
    """Print plain text (strings, or ``(text, style)`` pairs), no markup."""
    clean = [(printable(p[0]), p[1]) if isinstance(p, tuple) else printable(p) for p in parts]
    console.print(Text.assemble(*clean, style=style or ""), soft_wrap=True)


def shown(value: Any, limit: int | None = None) -> str:
    """``str(value)`` for a person to read, whatever the value (cut after
    ``limit`` characters, saying how many more there are); a string with
    nothing to see (empty, or only spaces) quoted, ``''``: a request or an
    output showed as ``str:`` with nothing after it."""
    if isinstance(value, str) and not value.strip():
        return printable(repr(value))
    try:
        text = str(value)
    except Exception:  # a huge int, a broken __str__
        text = str(jsonable(value))
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit:,} more characters)"
    return printable(text)


def event_record(event: Event) -> dict[str, Any]:
    """One event as a JSON-able dict: its ``kind``, fields, ``path``."""
    record: dict[str, Any] = {"kind": event.kind}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        # Only where set: a map worker's events, those of a sub-workflow run as a map's item.
        if field.name in ("item", "workflow_items") and value in (None, ()):
            continue
        record[field.name] = jsonable(value)
    record["workflow_path"] = list(event.workflow_path)
    record["path"] = event.path
    return record


def event_json(event: Event) -> str:
    """One event as one line of JSON."""
    return json.dumps(event_record(event), allow_nan=False)


_WRITING = 400  # characters of an agent's text the live view keeps


def _writer(event: Event, path: str) -> str:
    """Whose text an agent's event (at ``path``) is in the live view: its
    path, with a map worker's item (``drafts[1]``), as the agent's warnings
    name it."""
    return path if event.item is None else f"{path}[{event.item}]"


class LiveView:
    """Superstep counter, executors running (with elapsed time), outputs as
    they arrive and warnings, redrawn in place on a terminal. ``clock``
    tells the time in seconds (``time.monotonic``)."""

    def __init__(
        self, console: Console, title: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.title = title
        self.clock = clock
        self.started = clock()
        self.superstep = 0
        # Calls going on, by path: since when, and how many (a map's items
        # share their map's path and run at once: it runs until the last ends).
        self.running: dict[str, tuple[float, int]] = {}
        # While a path's calls go on: when the earliest that completed began
        # (its end less its duration) and when the latest ended. When none
        # is left running, that stretch is added to the path's time in
        # ``finished``: a map's items at once count once (its wall time), an
        # executor's calls one after another add up.
        self.stretch: dict[str, tuple[float, float]] = {}
        self.finished: dict[str, float] = {}
        self.failed: set[str] = set()
        self.outputs: list[Any] = []
        self.warnings: list[str] = []
        self.requests: list[RequestInfoEvent] = []
        self.status = "in_progress"
        self.failure: ExecutorFailedEvent | None = None
        # What each running agent is writing (its latest attempt), by path
        # and, for a map's worker, item (``drafts[1]``: a map's agents write
        # at once, their turns numbered alike).
        self.writing: dict[str, tuple[int, int, str]] = {}
        self.closing = False
        # On a terminal the view redraws in place; elsewhere (pipes, CI logs)
        # nothing is drawn while running and the summary says what happened.
        self._live = (
            Live(console=console, refresh_per_second=8, transient=False, auto_refresh=True)
            if console.is_terminal
            else None
        )

    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.update(self)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing = True  # the summary after the view prints the outputs in full
        if self._live is not None:
            self._live.update(self)
            self._live.__exit__(None, None, None)

    def handle(self, event: Event) -> None:
        path = event.path
        if isinstance(event, SuperstepStartedEvent) and not event.workflow_path:
            self.superstep = event.superstep or 0
        elif isinstance(event, ExecutorInvokedEvent):
            since, calls = self.running.get(path, (self.clock(), 0))
            self.running[path] = (since, calls + 1)
        elif event.kind == "agent_delta":
            turn, attempt = getattr(event, "turn", 0), getattr(event, "attempt", 0)
            writer = _writer(event, path)
            before = self.writing.get(writer)
            text = getattr(event, "text", "")
            if before is not None and before[:2] == (turn, attempt):
                text = (before[2] + text)[-_WRITING:]
            self.writing[writer] = (turn, attempt, text)
        elif isinstance(event, ExecutorCompletedEvent):
            now = self.clock()
            began, ended = self.stretch.get(path, (now, now))
            self.stretch[path] = (min(began, now - event.duration), max(ended, now))
            self._ended(path)
            self.writing.pop(_writer(event, path), None)
        elif isinstance(event, ExecutorFailedEvent):
            self._ended(path)
            self.writing.pop(_writer(event, path), None)
            self.failed.add(path)
            self.failure = self.failure or event
        elif isinstance(event, OutputEvent) and not event.workflow_path:
            self.outputs.append(event.data)
        elif isinstance(event, WarningEvent):
            named = event.executor_id is not None and repr(event.executor_id) in event.message
            self.warnings.append(event.message if named or not path else f"{path}: {event.message}")
        elif isinstance(event, RequestInfoEvent) and not event.workflow_path:
            self.requests.append(event)
        elif isinstance(event, StatusEvent) and not event.workflow_path:
            self.status = event.status.value
            if not self.status.startswith("in_progress"):
                # (calls cut short by a failing sibling, or a stop, end unsaid)
                for cut in list(self.running):
                    self._done(cut)
                self.running.clear()

    def _ended(self, path: str) -> None:
        since, calls = self.running.get(path, (0.0, 1))
        if calls > 1:
            self.running[path] = (since, calls - 1)
        else:
            self.running.pop(path, None)
            self._done(path)

    def _done(self, path: str) -> None:
        """None of ``path``'s calls runs now: what they took counts."""
        stretch = self.stretch.pop(path, None)
        if stretch is not None:
            self.finished[path] = self.finished.get(path, 0.0) + stretch[1] - stretch[0]

    def __rich__(self) -> Group:
        now = self.clock()
        head = Text.assemble(
            (printable(self.title), "bold"),
            f"  superstep {self.superstep}  ",
            (self.status, "cyan"),
            f"  {now - self.started:.1f} s",
        )
        table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
        table.add_column("executor", overflow="fold")
        table.add_column("state")
        table.add_column("time", justify="right")
        for path, (since, calls) in self.running.items():
            state = "running" if calls == 1 else f"running ({calls:,})"
            table.add_row(Text(printable(path)), Text(state, "yellow"), f"{now - since:.2f} s")
        for path in self.failed:
            table.add_row(Text(printable(path)), Text("failed", "red"), "")
        recent = list(self.finished.items())[-8:]
        for path, total in recent:
            if path not in self.running:
                table.add_row(Text(printable(path)), Text("done", "green"), f"{total:.3f} s")
        parts: list[Any] = [head, table]
        if self.closing:
            return Group(*parts)
        for path, (_, _, text) in list(self.writing.items())[-4:]:
            line = printable(" ".join(text.split()))[-160:]
            parts.append(Text.assemble((f"{printable(path)}: ", "magenta"), line))
        for output in self.outputs[-5:]:
            parts.append(
                Text(f"output: {shown(output)}", "bold green", overflow="ellipsis", no_wrap=True)
            )
        for warning in self.warnings[-3:]:
            parts.append(Text(f"warning: {printable(warning)}", "yellow", overflow="fold"))
        return Group(*parts)
