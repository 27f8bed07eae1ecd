"""SnapshotPart: pieces of an executor's snapshot stored as values of their
own — each stored once however many checkpoints hold it, restored as parts,
carried through sub-workflows, refused outside a snapshot — on every store."""

from __future__ import annotations

from typing import Any

import pytest

import stepgraph as sg
from stepgraph._checkpoint import TypeRegistry, decode, encode, reading_parts

LAST = 10
PAGE = 4


class Notebook(sg.Executor):
    """Writes a line per superstep; keeps its full pages of lines as parts."""

    def __init__(self, id: str = "notebook") -> None:
        super().__init__(id)
        self.lines: list[str] = []
        self.pages: list[sg.SnapshotPart] = []

    @sg.handler
    async def write(self, n: int, ctx: sg.WorkflowContext[int, list[str]]) -> None:
        self.lines.append(f"line {n}: ü [x] {'=' * n}")
        if n < LAST:
            await ctx.send_message(n + 1)
        else:
            await ctx.yield_output(list(self.lines))

    def snapshot(self) -> Any:
        full = len(self.lines) // PAGE
        while len(self.pages) < full:
            start = len(self.pages) * PAGE
            self.pages.append(sg.SnapshotPart(tuple(self.lines[start : start + PAGE])))
        return {"pages": list(self.pages), "rest": self.lines[full * PAGE :]}

    def restore(self, snapshot: Any) -> None:
        assert all(isinstance(p, sg.SnapshotPart) for p in snapshot["pages"])
        self.pages = list(snapshot["pages"])
        self.lines = [line for page in self.pages for line in page.value] + snapshot["rest"]


def notebook(store: sg.CheckpointStore) -> sg.Workflow:
    book = Notebook()
    return sg.WorkflowBuilder(start=book, checkpoints=store).add_edge(book, book).build()


EVERY_LINE = [f"line {n}: ü [x] {'=' * n}" for n in range(1, LAST + 1)]


async def test_parts_are_stored_once_and_restored_as_parts(
    store: sg.CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[set[str]] = []  # the values each saved checkpoint brought
    save = store.save

    async def saving(*checkpoints: sg.Checkpoint) -> None:
        sent.extend(set(cp.blobs) for cp in checkpoints)
        await save(*checkpoints)

    monkeypatch.setattr(store, "save", saving)
    done = await notebook(store).run(1)
    assert done.outputs == [EVERY_LINE]
    infos = await store.list(done.run_id)
    last = await store.load(done.last_checkpoint)
    pages = last.body["parts"]["notebook"]
    assert len(pages) == LAST // PAGE == 2
    for h in pages:  # stored by the one checkpoint that first held it
        assert sum(h in brought for brought in sent) == 1
        assert h in last.refs
    # Each checkpoint holds the pages full at its superstep, and goes on from there.
    for info in infos[:-1]:
        cp = await store.load(info.id)
        held = cp.body.get("parts", {}).get("notebook", [])
        assert set(held) <= set(pages)  # (the pages full by then: the same values)
        resumed = await notebook(store).run(checkpoint=info.id, fork=True)
        assert resumed.outputs == [EVERY_LINE], info.superstep


ASK_AT = 7


class AskingNotebook(Notebook):
    """A notebook that asks before its line ``ASK_AT`` (its run waits, held
    whole in its parent's checkpoint, pages and all)."""

    @sg.handler
    async def write(self, n: int, ctx: sg.WorkflowContext[int, list[str]]) -> None:
        if n == ASK_AT and not any(line.startswith(f"line {n}:") for line in self.lines):
            await ctx.request_info(str(n), bool)
            return
        await super().write(n, ctx)

    @sg.response_handler
    async def go_on(self, n: str, ok: bool, ctx: sg.WorkflowContext[int, list[str]]) -> None:
        await super().write(int(n), ctx)


class Parent(sg.Executor):
    @sg.handler
    async def start(self, n: int, ctx: sg.WorkflowContext[int]) -> None:
        await ctx.send_message(n)

    @sg.handler
    async def done(self, lines: list[str], ctx: sg.WorkflowContext[sg.Never, list[str]]) -> None:
        await ctx.yield_output(lines)


def nested(store: sg.CheckpointStore) -> sg.Workflow:
    book = AskingNotebook()
    child = sg.WorkflowBuilder(start=book, name="child").add_edge(book, book).build()
    sub = sg.WorkflowExecutor(child, id="sub")
    parent = Parent("parent")
    return (
        sg.WorkflowBuilder(start=parent, checkpoints=store)
        .add_edge(parent, sub)
        .add_edge(sub, parent)
        .build()
    )


async def test_a_sub_workflows_parts_stay_parts_of_its_parents_checkpoints(
    store: sg.CheckpointStore,
) -> None:
    waiting = await nested(store).run(1)
    [asked] = waiting.pending_requests
    cp = await store.load(waiting.last_checkpoint)
    # The child's pages (lines 1-4) are parts of the parent's snapshot of "sub".
    [page] = cp.body["parts"]["sub"]
    assert page in cp.refs
    done = await nested(store).run(
        responses={asked.request_id: True}, checkpoint=waiting.last_checkpoint
    )
    assert done.outputs == [EVERY_LINE]


def test_a_part_outside_a_snapshot_is_refused() -> None:
    registry = TypeRegistry()
    with pytest.raises(sg.CheckpointEncodeError, match="only within an executor's snapshot"):
        encode({"x": sg.SnapshotPart("y")}, registry)
    with pytest.raises(sg.CheckpointDecodeError, match="outside an executor's snapshot"):
        decode({"$t": "part", "v": "0" * 64}, registry)


def test_parts_repeating_one_another_are_decoded_once_each() -> None:
    """A stored document whose parts reference one another twice at each of
    40 levels (2**40 paths) decodes each part once."""
    stored: dict[str, Any] = {"h0": "leaf"}
    for level in range(1, 41):
        below = {"$t": "part", "v": f"h{level - 1}"}
        stored[f"h{level}"] = [below, below]
    fetched: list[str] = []

    def source(h: str) -> Any:
        fetched.append(h)
        return stored[h]

    with reading_parts(source):
        top = decode({"$t": "part", "v": "h40"}, TypeRegistry())
    assert isinstance(top, sg.SnapshotPart) and len(fetched) == 41
    leaf = top
    for _ in range(40):
        leaf = leaf.value[0]
    assert leaf == sg.SnapshotPart("leaf")
