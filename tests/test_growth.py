"""Storage grows with what changed, not with supersteps x state size."""

from __future__ import annotations

from pathlib import Path

import stepgraph as sg

KEYS, VALUE_BYTES, STEPS = 100, 10_000, 200


@sg.executor(id="fill")
async def fill(n: int, ctx: sg.WorkflowContext[int]) -> None:
    for i in range(KEYS):
        ctx.state.set(f"blob{i}", f"{i:04d}" * (VALUE_BYTES // 4))  # 1 MB in all
    await ctx.send_message(0)


@sg.executor(id="tick")
async def tick(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    ctx.state.set("counter", n)  # one small key changes per superstep
    if n < STEPS:
        await ctx.send_message(n + 1)
    else:
        await ctx.yield_output(len(ctx.state.get("blob7")))


def build(store: sg.CheckpointStore) -> sg.Workflow:
    return (
        sg.WorkflowBuilder(start=fill, checkpoints=store, max_supersteps=STEPS + 10)
        .add_edge(fill, tick)
        .add_edge(tick, tick)
        .build()
    )


async def test_database_grows_with_change_not_with_supersteps(tmp_path: Path) -> None:
    path = tmp_path / "growth.sqlite"
    store = sg.SqliteCheckpointStore(path)
    result = await build(store).run(1)
    assert result.outputs == [VALUE_BYTES]
    infos = await store.list(result.run_id)
    assert len(infos) == STEPS + 3
    size = path.stat().st_size + Path(f"{path}-wal").stat().st_size
    print(f"\n{len(infos)} checkpoints over 1 MB of state: database {size / 1e6:.1f} MB")
    assert size < 10e6, size  # copying the state each time would take ~200 MB
    assert max(i.size for i in infos[2:]) < 20_000  # after the fill, each adds a few KB

    assert await store.prune(keep_last=2) == len(infos) - 2
    after = path.stat().st_size
    assert after < size
    kept = await store.list(result.run_id)
    resumed = await build(store).run(checkpoint=kept[0].id)
    assert resumed.outputs == [VALUE_BYTES]
    store.close()
    assert sg.SqliteCheckpointStore(path).integrity_check() == "ok"
