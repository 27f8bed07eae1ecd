"""Answer once, continue once (issue 13, item 2), on the memory and SQLite
stores: a request is answered once along a run unless the caller forks; two
continuations of one run at once — one goes on; a lease dies with its
process; layouts are brought up to date only by `checkpoints migrate`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import stepgraph as sg
from stepgraph._checkpoint import new_holder
from stepgraph._checkpoint._leases import alive
from tests.checkpoint.racing import open_requests, race
from tests.conftest import ROOT
from tests.test_cli import cli
from tests.test_pauses import pipeline
from tests.test_requests import build

CALLED: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLED.clear()


async def test_an_answer_from_an_older_checkpoint_is_refused_unless_forked(
    store: sg.CheckpointStore,
) -> None:
    first = await build(store).run(["pay?"])
    [pending] = first.pending_requests
    done = await build(store).run(
        responses={pending.request_id: True}, checkpoint=first.last_checkpoint
    )
    assert done.outputs == ["pay?: yes"]
    answered_at = (await store.answers(first.run_id, [pending.request_id]))[pending.request_id]
    with pytest.raises(sg.RequestError) as raised:  # the printed command, run twice
        await build(store).run(
            responses={pending.request_id: False}, checkpoint=first.last_checkpoint
        )
    text = str(raised.value)
    assert f"request {pending.request_id!r}" in text and answered_at in text and "fork" in text
    forked = await build(store).run(
        responses={pending.request_id: False}, checkpoint=first.last_checkpoint, fork=True
    )
    assert forked.outputs == ["pay?: no"] and forked.run_id != first.run_id
    lineage = await store.list(forked.run_id)
    assert (await store.load(lineage[0].id)).parent_id == first.last_checkpoint
    with pytest.raises(sg.CheckpointError, match="fork=True starts a branch off a checkpoint"):
        await build(store).run(responses={pending.request_id: True}, fork=True)


async def test_an_answer_given_elsewhere_closes_the_copy_kept_in_memory(
    store: sg.CheckpointStore,
) -> None:
    here = build(store)
    first = await here.run(["ship?"])
    [pending] = first.pending_requests
    # Another process (another workflow object) answers through the store.
    await build(store).run(responses={pending.request_id: True}, checkpoint=first.last_checkpoint)
    with pytest.raises(sg.RequestError, match="was already answered"):
        await here.run(responses={pending.request_id: False})


class _SlowAnswer(sg.Executor):
    """Asks; handles its answer slowly (long enough to be cancelled at)."""

    @sg.handler
    async def ask(self, n: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await ctx.request_info(str(n), int)

    @sg.response_handler
    async def got(self, asked: str, answer: int, ctx: sg.WorkflowContext[sg.Never, str]) -> None:
        await asyncio.sleep(0.3)
        await ctx.yield_output(f"{asked}={answer}")


async def test_an_answer_cancelled_once_recorded_is_not_listed_as_open_in_memory(
    store: sg.CheckpointStore,
) -> None:
    # (the copy kept in memory still listed the request as open, though the
    # store had recorded its answer and refused any other)
    workflow = sg.WorkflowBuilder(start=_SlowAnswer("asker"), checkpoints=store).build()
    first = await workflow.run(1)
    [pending] = first.pending_requests
    answering = asyncio.ensure_future(workflow.run(responses={pending.request_id: 2}))
    while not await store.answers(first.run_id, [pending.request_id]):
        await asyncio.sleep(0.005)
    answering.cancel()  # while its answer is handled: recorded, not done
    with pytest.raises(asyncio.CancelledError):
        await answering
    at = (await store.answers(first.run_id, [pending.request_id]))[pending.request_id]
    assert workflow.pending_requests == []
    with pytest.raises(sg.RequestError, match=f"already answered \\(at checkpoint {at}\\)"):
        await workflow.run(responses={pending.request_id: 3})
    # It goes on from the checkpoint that recorded the answer, as answered.
    done = await workflow.run(checkpoint=(await store.latest(first.run_id)).id)  # type: ignore[union-attr]
    assert done.outputs == ["1=2"]


async def test_a_replay_without_answers_still_runs_from_any_checkpoint(
    store: sg.CheckpointStore,
) -> None:
    first = await build(store).run(["a", "b"])
    ids = [p.request_id for p in first.pending_requests]
    await build(store).run(responses={ids[0]: True}, checkpoint=first.last_checkpoint)
    replay = await build(store).run(checkpoint=first.last_checkpoint)  # time travel
    assert sorted(p.request_id for p in replay.pending_requests) == sorted(ids)
    # ...but what the run answered stays answered along it.
    with pytest.raises(sg.RequestError, match="already answered"):
        await build(store).run(responses={ids[0]: False}, checkpoint=replay.last_checkpoint)
    rest = await build(store).run(responses={ids[1]: True}, checkpoint=replay.last_checkpoint)
    assert rest.outputs == ["b: yes"]


@sg.executor(id="slow")
async def slow(n: int, ctx: sg.WorkflowContext[int, int]) -> None:
    await asyncio.sleep(0.05)
    await ctx.yield_output(n)
    if n < 4:
        await ctx.send_message(n + 1)


def looping(store: sg.CheckpointStore) -> sg.Workflow:
    return sg.WorkflowBuilder(start=slow, checkpoints=store).add_edge(slow, slow).build()


async def test_two_continuations_of_one_run_at_once_one_goes_on(
    store: sg.CheckpointStore,
) -> None:
    paused = await looping(store).run(0, interrupt_after=["slow"])
    assert paused.status is sg.RunStatus.PAUSED
    results = await asyncio.gather(
        looping(store).run(checkpoint=paused.last_checkpoint),
        looping(store).run(checkpoint=paused.last_checkpoint),
        return_exceptions=True,
    )
    done = [r for r in results if isinstance(r, sg.RunResult)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(done) == 1 and done[0].outputs == [1, 2, 3, 4]
    assert len(refused) == 1 and isinstance(refused[0], sg.CheckpointError)
    assert f"run {paused.run_id!r} is being continued elsewhere" in str(refused[0])
    # (by a call of this process, said so: it named this process as another)
    assert f"(another call in this process, {os.getpid()} on " in str(refused[0])
    # Once it stopped, the run is free again.
    again = await looping(store).run(checkpoint=paused.last_checkpoint, fork=True)
    assert again.outputs == [1, 2, 3, 4]
    assert await store.lease(paused.run_id, "someone") is None


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_loser_of_an_answer_leaves_how_the_run_stands(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two processes answer one request: the one whose check of recorded
    answers came before the other's answer is refused when it saves — and
    records nothing, not even a failure over the winner's ending."""

    def open_store() -> sg.CheckpointStore:
        if kind == "sqlite":
            return sg.SqliteCheckpointStore(tmp_path / "race.sqlite")
        return sg.PostgresCheckpointStore(request.getfixturevalue("pg_dsn"))

    winner_store, loser_store = open_store(), open_store()
    try:
        first = await build(winner_store).run(["pay?"])
        [pending] = first.pending_requests
        checked = asyncio.Event()
        go_on = asyncio.Event()
        looked_up = loser_store.answers

        async def answers_then_wait(run_id: str, request_ids: Any) -> dict[str, str]:
            found = await looked_up(run_id, request_ids)  # (nothing yet)
            checked.set()
            await go_on.wait()  # the other answers meanwhile
            return found

        loser_store.answers = answers_then_wait  # type: ignore[method-assign]
        loser = asyncio.create_task(
            build(loser_store).run(
                responses={pending.request_id: False}, checkpoint=first.last_checkpoint
            )
        )
        await checked.wait()
        done = await build(winner_store).run(
            responses={pending.request_id: True}, checkpoint=first.last_checkpoint
        )
        assert done.outputs == ["pay?: yes"] and done.status is sg.RunStatus.IDLE
        go_on.set()
        with pytest.raises(sg.RequestError, match="already answered"):
            await loser
        info = await winner_store.run_info(first.run_id)
        assert info is not None and (info.status, info.error) == ("idle", None)
        assert info.last_checkpoint == done.last_checkpoint
    finally:
        winner_store.close()  # type: ignore[attr-defined]
        loser_store.close()  # type: ignore[attr-defined]


async def test_a_continuation_cancelled_while_taking_the_run_gives_it_back(
    store: sg.CheckpointStore,
) -> None:
    paused = await looping(store).run(0, interrupt_after=["slow"])
    taking, taken, took = store._lease, asyncio.Event(), asyncio.Event()  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()

    def slow_lease(run_id: str, holder: str) -> str | None:
        loop.call_soon_threadsafe(taken.set)
        time.sleep(0.3)  # (the store's file or database busy with another writer)
        try:
            return taking(run_id, holder)  # type: ignore[no-any-return]
        finally:
            loop.call_soon_threadsafe(took.set)

    store._lease = slow_lease  # type: ignore[attr-defined]
    call = asyncio.ensure_future(looping(store).run(checkpoint=paused.last_checkpoint))
    await asyncio.wait_for(taken.wait(), 5)
    call.cancel()  # while the store takes the run
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(took.wait(), 5)  # (the store took it meanwhile, on its thread)
    store._lease = taking  # type: ignore[attr-defined]
    # Nothing holds the run now: it goes on at once, here or in another process.
    assert await store.lease(paused.run_id, "someone") is None
    await store.release(paused.run_id, "someone")
    done = await looping(store).run(checkpoint=paused.last_checkpoint)
    assert done.outputs == [1, 2, 3, 4]


def test_a_lease_names_its_process_and_dies_with_it() -> None:
    mine = new_holder()
    assert alive(mine) and mine.split(":")[1] == str(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    host, _, started, token = mine.split(":")
    theirs = f"{host}:{child.pid}:{started}:{token}"
    child.kill()
    child.wait()
    assert not alive(theirs)
    assert not alive("not a holder")


# -- across processes -------------------------------------------------------------


def test_two_processes_racing_to_answer_one_request_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "race.sqlite"
    rounds = 50
    runs = asyncio.run(open_requests(lambda: sg.SqliteCheckpointStore(path), rounds))
    tallies = race("sqlite", str(path), runs)
    for tally in tallies:
        assert tally[0] != "won" or tally[1] != "won", tally
        assert "won" in tally, tally  # exactly one went on
    answered = sum(1 for t in tallies if "answered" in t)
    busy = sum(1 for t in tallies if "busy" in t)
    assert answered + busy == rounds

    async def recorded() -> list[int]:
        with sg.SqliteCheckpointStore(path) as store:
            counts = []
            for checkpoint, request_id in runs:
                run_id = (await store.load(checkpoint)).run_id
                counts.append(len(await store.answers(run_id, [request_id])))
                assert (await store.run_info(run_id)) is not None
            return counts

    assert asyncio.run(recorded()) == [1] * rounds  # each answer recorded once


HOLDER = """
import asyncio, sys
import stepgraph as sg
from tests.checkpoint.test_answer_once import looping

store = sg.SqliteCheckpointStore(sys.argv[1])
async def main():
    workflow = looping(store)
    async for event in workflow.stream(checkpoint=sys.argv[2]):
        if event.kind == "superstep_started":
            print("running", flush=True)
            await asyncio.sleep(60)  # hold the run until killed
asyncio.run(main())
"""


def test_a_run_held_by_a_killed_process_goes_on_elsewhere_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lease.sqlite"

    async def pause() -> sg.RunResult:
        with sg.SqliteCheckpointStore(path) as store:
            return await looping(store).run(0, interrupt_after=["slow"])

    paused = asyncio.run(pause())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), paused.last_checkpoint or ""],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "running"

    async def resume() -> sg.RunResult:
        with sg.SqliteCheckpointStore(path) as store:
            return await looping(store).run(checkpoint=paused.last_checkpoint)

    with pytest.raises(sg.CheckpointError, match=f"process {holder.pid} on"):
        asyncio.run(resume())
    holder.send_signal(signal.SIGKILL)
    holder.communicate()  # (waits, and closes its pipe)
    started = time.perf_counter()
    assert asyncio.run(resume()).outputs == [1, 2, 3, 4]
    assert time.perf_counter() - started < 5  # at once: no timer to wait out


def test_the_printed_respond_command_run_twice_is_refused(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 'twice.sqlite'}"
    first = cli("run", "examples.approval:build", "--input", '{"who": "dana", "amount": 420}',
                "--store", spec)  # fmt: skip
    assert first.returncode == 2, first.stderr
    [command] = [line.strip() for line in first.stdout.splitlines() if "--respond" in line]
    args = command.split(" ", 1)[1]
    import shlex

    once = cli(*shlex.split(args))
    assert once.returncode == 0 and "approved" in once.stdout
    twice = cli(*shlex.split(args))
    assert twice.returncode == 1 and "answered already" in twice.stderr + twice.stdout
    forked = cli(*shlex.split(args.replace("--respond", "--fork --respond")))
    assert forked.returncode == 0, forked.stderr
    # From the checkpoint that had it open (the store refuses it): one line,
    # which does not call the answered request open.
    checkpoints = cli("checkpoints", "list", "--store", spec, "--run", first_run(first.stdout))
    waiting = [line.split()[1] for line in checkpoints.stdout.splitlines() if "pending" in line]
    again = cli(*shlex.split(args.replace("--respond", f"--resume {waiting[-1]} --respond")))
    assert again.returncode == 1, again.stdout
    [line] = again.stderr.strip().splitlines()
    assert "already answered" in line and "still open" not in line, line


def first_run(stdout: str) -> str:
    found = re.search(r"\(run ([0-9a-f]{32})\)", stdout)
    assert found is not None, stdout
    return found.group(1)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_answer_whose_continuation_stopped_points_at_going_on(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The answer was taken, then its continuation stopped (Ctrl-C, a kill):
    answering again is refused, saying how to go on with the answer given —
    from that run's checkpoint, never ``--resume latest``, which takes the
    newest run of the workflow (here another one, started since)."""
    spec = f"sqlite:{tmp_path / 'stopped.sqlite'}"
    if kind == "postgres":
        spec = request.getfixturevalue("pg_dsn")

    def open_store() -> sg.CheckpointStore:
        if kind == "sqlite":
            return sg.SqliteCheckpointStore(tmp_path / "stopped.sqlite")
        return sg.PostgresCheckpointStore(spec)

    first = cli("run", "examples.approval:build", "--input", '{"who": "dana", "amount": 420}',
                "--store", spec)  # fmt: skip
    [command] = [line.strip() for line in first.stdout.splitlines() if "--respond" in line]
    import shlex

    assert cli(*shlex.split(command)[1:]).returncode == 0
    run_id = first_run(first.stdout)
    newer = cli("run", "examples.approval:build", "--input", '{"who": "eve", "amount": 990}',
                "--store", spec)  # fmt: skip
    assert newer.returncode == 2 and first_run(newer.stdout) != run_id
    with open_store() as store:  # (as if stopped after taking the answer)
        asyncio.run(store.set_status(run_id, "cancelled", "stopped"))
        info = asyncio.run(store.run_info(run_id))
        assert info is not None
        # While a process holds the run, it is said to go on there.
        holder = new_holder()
        assert asyncio.run(store.lease(run_id, holder)) is None
        going = cli(*shlex.split(command)[1:])
        assert going.returncode == 1 and "the run is going on with that answer" in going.stderr
        assert "--resume" not in going.stderr.split("; to answer it again")[0]
        asyncio.run(store.release(run_id, holder))
    after = cli(*shlex.split(command)[1:])
    assert after.returncode == 1
    advice = f"stopped since (cancelled): go on with it with --resume {info.last_checkpoint};"
    assert advice in after.stderr
    # The advice, followed, goes on with this run (its answer was taken).
    resumed = cli("run", "examples.approval:build", "--store", spec,
                  "--resume", info.last_checkpoint)  # fmt: skip
    assert first_run(resumed.stdout) == run_id, resumed.stdout + resumed.stderr


# -- layouts ---------------------------------------------------------------------


def test_an_older_layout_is_refused_then_migrated_with_its_answers(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"

    async def answered_run() -> tuple[str, str, str]:
        with sg.SqliteCheckpointStore(path) as store:
            first = await build(store).run(["old?"])
            rid = first.pending_requests[0].request_id
            await build(store).run(responses={rid: True}, checkpoint=first.last_checkpoint)
            return first.run_id, rid, first.last_checkpoint or ""

    run_id, request_id, checkpoint = asyncio.run(answered_run())
    with sqlite3.connect(path) as db:  # what layout 3 (the previous version) had
        db.execute("DROP TABLE answers")
        db.execute("DROP TABLE leases")
        db.execute("PRAGMA user_version = 3")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file itself
    db.close()
    before = path.read_bytes()
    store = sg.SqliteCheckpointStore(path)
    with pytest.raises(sg.CheckpointError, match="stepgraph checkpoints migrate"):
        asyncio.run(store.list())
    store.close()
    assert path.read_bytes() == before  # a normal open changed nothing
    done = cli("checkpoints", "migrate", "--store", f"sqlite:{path}")
    assert done.returncode == 0 and "layout 3 -> 4" in done.stdout, done.stderr
    again = cli("checkpoints", "migrate", "--store", f"sqlite:{path}")
    assert again.returncode == 0 and "nothing to do" in again.stdout

    async def answer_again() -> None:
        with sg.SqliteCheckpointStore(path) as store:
            assert list(await store.answers(run_id, [request_id])) == [request_id]
            await build(store).run(responses={request_id: False}, checkpoint=checkpoint)

    with pytest.raises(sg.RequestError, match="already answered"):  # backfilled
        asyncio.run(answer_again())


def test_a_newer_layout_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    asyncio.run(sg.SqliteCheckpointStore(path).list())
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 9")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    before = path.read_bytes()
    with pytest.raises(sg.CheckpointError, match="written by a newer stepgraph"):
        asyncio.run(sg.SqliteCheckpointStore(path).list())
    migrated = cli("checkpoints", "migrate", "--store", f"sqlite:{path}")
    assert migrated.returncode == 1 and "it is newer" in migrated.stderr
    assert path.read_bytes() == before


async def test_a_new_run_holds_itself_while_it_runs_and_lets_go_after(
    store: sg.CheckpointStore,
) -> None:
    for durability in ("sync", "async"):
        config = sg.CheckpointConfig(store, durability)  # type: ignore[arg-type]
        workflow = looping(store)
        stream = workflow.stream(0, checkpoints=config)
        run_id = ""
        async for event in stream:
            if isinstance(event, sg.RunStartedEvent):
                run_id = event.run_id
            if isinstance(event, sg.SuperstepCompletedEvent) and event.superstep == 2:
                break_at = (await store.latest(run_id)) if durability == "sync" else None
                if break_at is not None:  # the run is still going: nobody else may
                    with pytest.raises(sg.CheckpointError, match="being continued elsewhere"):
                        await looping(store).run(checkpoint=break_at.id)
        assert run_id and await store.lease(run_id, new_holder()) is None  # given back


WRITER = """
import asyncio, json, sys
import stepgraph as sg
from tests.test_pauses import pipeline

async def main():
    store = sg.SqliteCheckpointStore(sys.argv[1], busy_timeout=60)
    ids = []
    for _ in range(int(sys.argv[2])):
        result = await pipeline(store).run(1)
        assert result.outputs == [20], result.outputs
        ids.append(result.run_id)
    store.close()
    print(json.dumps(ids))

asyncio.run(main())
"""


def test_four_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    asyncio.run(sg.SqliteCheckpointStore(path).list())  # created once, before the race
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), "200"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(4)
    ]
    run_ids = []
    for writer in writers:
        out, _ = writer.communicate(timeout=300)
        assert writer.returncode == 0
        run_ids += json.loads(out)

    async def check() -> None:
        with sg.SqliteCheckpointStore(path) as store:
            listed = {r.run_id: r for r in await store.runs(limit=10_000)}
            assert set(listed) == set(run_ids) and len(run_ids) == 800  # none lost
            for run_id in run_ids[::37]:  # every 37th: each whole and resumable
                infos = await store.list(run_id)
                assert len(infos) == listed[run_id].checkpoints == 4  # entry + 3 barriers
                latest = await store.latest(run_id)
                assert latest is not None and latest.id == infos[-1].id
                again = await pipeline(store).run(checkpoint=infos[1].id, fork=True)
                assert again.outputs == [20]
            assert store.integrity_check() == "ok"

    asyncio.run(check())


def _stat(pid: int) -> list[bytes]:
    """The fields of /proc/PID/stat after the command name: state first."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        return file.read().rsplit(b")", 1)[1].split()


def test_a_lease_of_a_killed_process_not_yet_collected_is_free(tmp_path: Path) -> None:
    """Killed (kill -9) but not yet collected by its parent — a zombie, for
    as long as a container's first process takes to collect it — a process
    holds nothing: another process takes its runs at once (a second
    ``stepgraph serve`` resuming them, say)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host, _, _, token = new_holder().split(":")
        theirs = f"{host}:{child.pid}:{_stat(child.pid)[19].decode()}:{token}"
        assert alive(theirs)
        with sg.SqliteCheckpointStore(tmp_path / "leases.sqlite") as store:
            assert asyncio.run(store.lease("r1", theirs)) is None
            assert asyncio.run(store.lease("r1", new_holder())) == theirs  # (held)
            child.kill()
            while _stat(child.pid)[0] != b"Z":
                time.sleep(0.01)  # (killed: a zombie until collected below)
            assert not alive(theirs)
            assert asyncio.run(store.lease("r1", new_holder())) is None  # taken over
    finally:
        child.kill()
        child.wait()
