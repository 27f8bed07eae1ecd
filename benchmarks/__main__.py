"""Run the benchmarks and print a table:
``python -m benchmarks [--quick] [--ray] [--postgres] [--serve]``.

Every stepgraph figure is printed beside what it is compared with, measured
in the same run — the bare-asyncio floor, or for W7 W2 at the same width and
for W8 a workflow built per run — and as a ratio to it. Each figure is the best of several
repeats (the least disturbed by other load on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import stepgraph as sg

from . import stores
from . import workloads as w


@dataclass
class Row:
    name: str
    unit: str
    value: float
    floor: float | None
    target: str = ""
    ok: bool | None = None


def best(repeats: int, make: Callable[[], Awaitable[object]]) -> float:
    """Best wall time in seconds of ``repeats`` awaits of ``make()``."""

    async def measure() -> float:
        await make()  # warm up caches and the dispatch tables
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            await make()
            times.append(time.perf_counter() - started)
        return min(times)

    return asyncio.run(measure())


def run_of(flow: sg.Workflow, value: int) -> Callable[[], Awaitable[object]]:
    """A new run of ``flow`` with ``value`` per call (bound now, not when called)."""
    return lambda: flow.run(value)


def floor_of(width: int) -> Callable[[], Awaitable[object]]:
    return lambda: w.floor_fan_out_in(width)


def best_of_each(
    repeats: int, makes: dict[str, Callable[[], Awaitable[object]]]
) -> dict[str, float]:
    """Best wall time in seconds of each variant, measured round-robin (one
    await of each per round) so that a burst of load on a shared machine
    hits every variant alike rather than whichever ran during it."""

    async def measure() -> dict[str, float]:
        for make in makes.values():
            await make()  # warm up
        times = {name: float("inf") for name in makes}
        for _ in range(repeats):
            for name, make in makes.items():
                started = time.perf_counter()
                await make()
                times[name] = min(times[name], time.perf_counter() - started)
        return times

    return asyncio.run(measure())


def peak_rss_of_w2(width: int) -> tuple[float, float]:
    """Run W2 at ``width`` in a fresh process: (seconds, peak RSS MiB of the
    whole process, interpreter included)."""
    code = f"""
import asyncio, json, time
from benchmarks import workloads as w
started = time.perf_counter()
workflow = w.fan_out_in({width})
result = asyncio.run(workflow.run(3))
elapsed = time.perf_counter() - started
assert result.outputs == [9 * {width}], result.outputs
# VmHWM belongs to this process image; ru_maxrss would carry the parent's peak over fork.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps([elapsed, int(hwm.split()[1]) / 1024]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, mib = json.loads(out.stdout)
    return seconds, mib


def map_rows(repeats: int) -> list[Row]:
    """W7: a map over 1,000 items as a ratio to W2's fan-out to 1,000 executors."""
    width = 1_000
    mapped, fan = w.map_of(width), w.fan_out_in(width)
    times = best_of_each(
        max(3, repeats // 3), {"map": run_of(mapped, width), "fan": run_of(fan, 3)}
    )
    t, f = times["map"] * 1e3, times["fan"] * 1e3
    return [Row(f"W7 map {width} (vs W2)", "ms/run", t, f, "<= 2x W2", t <= 2 * f)]


def concurrent_rows(runs: int) -> list[Row]:
    """W8: ``runs`` concurrent runs of one workflow of per-run executors
    (registered factories) beside building a workflow per run, each in a
    fresh process: seconds for the batch and the process's peak RSS."""
    code = """
import asyncio, json, sys, time
from benchmarks import workloads as w
runs, shared = int(sys.argv[1]), sys.argv[2] == "shared"
async def batch():
    if shared:
        flow = w.five_registered()
        return await asyncio.gather(*(flow.run(0) for _ in range(runs)))
    return await asyncio.gather(*(w.five_built().run(0) for _ in range(runs)))
started = time.perf_counter()
results = asyncio.run(batch())
elapsed = time.perf_counter() - started
assert all(r.outputs == [w.FIVE_ANSWER] for r in results)
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps([elapsed, int(hwm.split()[1]) / 1024]))
"""
    measured = {}
    for way in ("shared", "per-run"):
        best_run: tuple[float, float] = (float("inf"), 0.0)
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, "-c", code, str(runs), way],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds, mib = json.loads(out.stdout)
            best_run = min(best_run, (seconds, mib))
        measured[way] = best_run
    (t, mib), (t_built, mib_built) = measured["shared"], measured["per-run"]
    return [
        Row(f"W8 {runs} runs, shared", "s (vs per-run)", t, t_built),
        Row(f"W8 {runs} runs, shared", "MiB (vs per-run)", mib, mib_built),
    ]


def checkpoint_rows(repeats: int) -> list[Row]:
    """W5: W1 with checkpoints, as a ratio to W1 without, and the state-size scan."""
    gc.collect()  # start from a collected heap, whatever ran before
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as folder:
        stores: list[sg.SqliteCheckpointStore] = []

        def sqlite(name: str) -> sg.SqliteCheckpointStore:
            stores.append(sg.SqliteCheckpointStore(Path(folder) / f"{name}.sqlite"))
            return stores[-1]

        variants: list[tuple[str, sg.CheckpointConfig | None, str]] = [
            ("W1 without checkpoints", None, ""),
            ("W5 W1 + memory store", sg.CheckpointConfig(sg.MemoryCheckpointStore()), ""),
            ("W5 W1 + SQLite sync", sg.CheckpointConfig(sqlite("sync"), "sync"), "<= 3x"),
            ("W5 W1 + SQLite async", sg.CheckpointConfig(sqlite("async"), "async"), "<= 3x"),
        ]
        flows = {name: w.chain(50, config) for name, config, _ in variants}
        # Runs are short (a few ms): three times the repeats, for a steadier
        # best. The runs that wait on a thread at every superstep are timed
        # apart: their hand-offs slow whatever runs next.
        apart = {"W5 W1 + SQLite sync", "floor"}
        floor = w.SyncWriteFloor(Path(folder) / "floor.sqlite", stores[0])  # the sync store
        runs: dict[str, Callable[[], Awaitable[object]]] = {
            name: run_of(flow, 0) for name, flow in flows.items()
        }
        runs["floor"] = lambda: floor.write(50)
        times = best_of_each(3 * repeats, {k: v for k, v in runs.items() if k not in apart})
        for name in sorted(apart):
            times[name] = best(3 * repeats, runs[name])
        base = times["W1 without checkpoints"] / 50 * 1e6
        for name, _, target in variants[1:]:
            t = times[name] / 50 * 1e6
            ok = (t <= 3 * base) if target else None
            rows.append(Row(name, "µs/superstep", t, base, target, ok))
        # What any writer that commits each checkpoint off the loop before the
        # next superstep pays: a round trip to its thread and a one-row commit.
        floor_t = base + times["floor"] / 50 * 1e6
        rows.append(Row("W5 sync floor (W1 + RT)", "µs/superstep", floor_t, base))
        for total, label in ((1_000, "1 KB"), (1_000_000, "1 MB")):
            bare = w.state_ticker(total)
            stored = w.state_ticker(total, sg.CheckpointConfig(sqlite(f"state{total}")))
            steps = w.STATE_STEPS + 2
            scan = best_of_each(
                max(2, repeats // 3),
                {"bare": run_of(bare, 1), "stored": run_of(stored, 1)},
            )
            per_checkpoint = (scan["stored"] - scan["bare"]) / steps * 1e6
            rows.append(Row(f"W5 state {label}, 1 key/step", "µs/checkpoint", per_checkpoint, None))
        for store in stores:
            store.close()
        floor.close()
    return rows


def store_rows(quick: bool) -> list[Row]:
    """W6: stores holding many runs."""
    big = 2_000 if quick else 20_000
    rows: list[Row] = []
    small, large = stores.memory_scale(big)
    rows.append(Row(f"W6 memory, {big} runs", "µs/run", large, small, "flat (vs 100 runs)"))
    long_run = 500 if quick else 5_000
    scale = stores.sqlite_scale(big, long_run)
    for what, label, target in (
        ("runs page", "runs, a page", "<= 10 ms"),
        ("one run's checkpoints", "one run listed", ""),
        ("delete a run", "delete a run", ""),
        ("delete a big run", f"delete {long_run}", ""),
        ("prune every run", "prune all", ""),
    ):
        value = scale[what]
        ok = value <= float(target.split()[1]) if target else None
        rows.append(Row(f"W6 SQLite {label}", "ms", value, None, target, ok))
    worst, alone = scale["writer meanwhile"], scale["writer alone"]
    rows.append(Row("W6 other writer, worst", "ms/save", worst, alone, "<= 100 ms", worst <= 100))
    return rows


def ray_rows(quick: bool) -> list[Row]:
    """W3 and W2 on the Ray backend with warm actors, beside a raw Ray actor
    round trip; and how soon an event emitted in an actor reaches stream()."""
    backend = sg.RayBackend(init_options={"num_cpus": 2})
    hops = 40 if quick else 200
    rows: list[Row] = []
    try:
        ray = backend._ray
        backend._connect()

        @ray.remote(num_cpus=0)
        class Echo:
            def ping(self, value: int) -> int:
                return value

        echo = Echo.remote()  # type: ignore[attr-defined]  # ray adds .remote

        async def round_trips() -> None:
            for i in range(hops):
                await echo.ping.remote(i)

        raw = best(3, round_trips) / hops * 1e6
        ray.kill(echo)
        # Runs after the first find their actors warm: a whole run is hops.
        pong = w.ping_pong(hops)
        asyncio.run(pong.run(0, backend=backend))
        t = best(3, lambda: pong.run(0, backend=backend)) / hops * 1e6
        rows.append(Row("W3 ping-pong on Ray", "µs/hop", t, raw, "<= 2x actor RT", t <= 2 * raw))
        fan = w.fan_out_in(10)
        started = time.perf_counter()
        asyncio.run(fan.run(3, backend=backend))
        cold = (time.perf_counter() - started) * 1e3
        rows.append(Row("W2 fan-out/in 10 on Ray", "ms, first run", cold, None))
        t = best(3, lambda: fan.run(3, backend=backend)) * 1e3
        rows.append(Row("W2 fan-out/in 10 on Ray", "ms, warm run", t, raw / 1e3))
        # The same with the executors in one actor: one call per superstep.
        together = sg.RayBackend(colocate=True)
        asyncio.run(fan.run(3, backend=together))
        t = best(3, lambda: fan.run(3, backend=together)) * 1e3
        rows.append(
            Row("W2 ... colocated", "ms, warm run", t, raw / 1e3, "<= 15 actor RT",
                t <= 15 * raw / 1e3)
        )  # fmt: skip
        together.close()
        first, every = w.live_event_latency(backend, 100)
        rows.append(
            Row("Live event from actor", "ms p50, first", first, None, "<= 50 ms", first <= 50)
        )
        rows.append(Row("Live event from actor", "ms p50, all 100", every, None))
    finally:
        backend.close()
    return rows


def run(quick: bool, postgres: bool = False) -> list[Row]:
    repeats = 3 if quick else 15
    hops = 200 if quick else 2000
    rows: list[Row] = []

    chain = w.chain(50)
    t = best(repeats, lambda: chain.run(0)) / 50 * 1e6
    f = best(repeats, lambda: w.floor_chain(50)) / 50 * 1e6
    rows.append(Row("W1 chain of 50", "µs/superstep", t, f))

    for width in (100, 1000) if quick else (100, 1000, 10000):
        fan = w.fan_out_in(width)
        # The sub-millisecond runs get three times the repeats, for a steadier best.
        reps = {100: 3 * repeats, 1000: repeats}.get(width, max(2, repeats // 5))
        t = best(reps, run_of(fan, 3)) * 1e3
        f = best(reps, floor_of(width)) * 1e3
        target, ok = ("<= 1.5 ms, <= 2x", t <= 1.5 and t <= 2 * f) if width == 100 else ("", None)
        rows.append(Row(f"W2 fan-out/in {width}", "ms/run", t, f, target, ok))
    # Python's cyclic GC grows superlinearly with the number of live objects; with
    # it paused, the engine's own cost at the widest size shows (floor likewise).
    gc.disable()
    try:
        t = best(reps, run_of(fan, 3)) * 1e3
        f = best(reps, floor_of(width)) * 1e3
    finally:
        gc.enable()
    rows.append(Row(f"W2 fan-out/in {width} nogc", "ms/run", t, f))

    pong = w.ping_pong(hops)
    t = best(repeats, lambda: pong.run(0)) / hops * 1e6
    f = best(repeats, lambda: w.floor_ping_pong(hops)) / hops * 1e6
    rows.append(Row("W3 ping-pong", "µs/hop", t, f, "<= 25 µs, <= 10x", t <= 25 and t <= 10 * f))

    many = w.many_to_one(50)
    t = best(3 * repeats, lambda: many.run(3)) * 1e3
    f = best(3 * repeats, lambda: w.floor_many_to_one(50)) * 1e3
    rows.append(Row("W4 50 -> 1", "ms/run", t, f, "<= 1 ms, <= 2x", t <= 1.0 and t <= 2 * f))

    rows += map_rows(repeats)

    rows += checkpoint_rows(repeats)
    rows += store_rows(quick)

    seconds, mib = peak_rss_of_w2(1000)
    rows.append(
        Row("W2 1000, fresh process", "s (build+run)", seconds, None, "< 0.2 s", seconds < 0.2)
    )
    rows.append(Row("W2 1000, fresh process", "peak RSS MiB", mib, None, "< 40 MiB", mib < 40))
    rows += concurrent_rows(100 if quick else 1_000)
    rows += agent_rows(repeats)
    if postgres:
        from . import postgres as pg

        # (sub-millisecond runs on a shared machine: ten times the repeats, for a steadier best)
        for name, unit, value, beside in pg.rows(10 * repeats, 50 if quick else 200):
            target, ok = ("<= 3x", value <= 3 * beside) if name.endswith("async") else ("", None)
            rows.append(Row(name, unit, value, beside, target, ok if beside else None))
    rows += otel_rows(repeats)  # (last: it leaves a tracer provider installed)
    return rows


def otel_rows(repeats: int) -> list[Row]:
    """W1 and W3 untraced, beside the same with OpenTelemetry's API imported
    but no SDK configured (tracing off), and traced (an SDK recording every
    span into a processor that drops it). Last: it leaves the API imported."""
    chain, pong = w.chain(50), w.ping_pong(2000)

    def both() -> tuple[float, float]:
        return (
            best(3 * repeats, run_of(chain, 0)) / 50 * 1e6,
            best(repeats, run_of(pong, 0)) / 2000 * 1e6,
        )

    plain = both()
    import opentelemetry.trace

    off = both()
    from opentelemetry.sdk.trace import TracerProvider

    opentelemetry.trace.set_tracer_provider(TracerProvider())  # records, exports nowhere
    on = both()
    return [
        Row("OTel API, no SDK: W1", "µs/superstep", off[0], plain[0]),
        Row("OTel API, no SDK: W3", "µs/hop", off[1], plain[1]),
        Row("OTel SDK, traced: W1", "µs/superstep", on[0], plain[0]),
        Row("OTel SDK, traced: W3", "µs/hop", on[1], plain[1]),
    ]


def agent_rows(repeats: int) -> list[Row]:
    """W9: an agent's model turn beside a bare SDK call; 100 concurrent agent runs."""
    from . import agents

    t = {name: seconds * 1e3 for name, seconds in agents.turn_vs_sdk(3 * repeats).items()}
    rows = [
        Row("W9 agent turn (vs SDK)", "ms/turn", t["agent"], t["bare"], "<= 1.1x",
            t["agent"] <= 1.1 * t["bare"]),
        Row("W9 ... streamed (vs SDK)", "ms/turn", t["agent streamed"], t["bare streamed"],
            "<= 1.1x", t["agent streamed"] <= 1.1 * t["bare streamed"]),
    ]  # fmt: skip
    seconds, mib = agents.concurrent_runs(100)
    rows.append(Row("W9 100 agent runs", "s (all at once)", seconds, None, "no errors", True))
    rows.append(Row("W9 100 agent runs", "peak RSS MiB", mib, None))
    return rows


def render(rows: list[Row]) -> str:
    head = f"{'workload':<26}{'unit':<17}{'stepgraph':>10}{'beside':>10}{'ratio':>8}  target"
    lines = [head, "-" * len(head)]
    for r in rows:
        floor = f"{r.floor:>10.2f}" if r.floor is not None else f"{'':>10}"
        ratio = f"{r.value / r.floor:>7.1f}x" if r.floor else f"{'':>8}"
        verdict = "" if r.ok is None else ("  ok" if r.ok else "  MISSED")
        lines.append(f"{r.name:<26}{r.unit:<17}{r.value:>10.2f}{floor}{ratio}  {r.target}{verdict}")
    return "\n".join(lines)


def _missing(args: argparse.Namespace) -> dict[str, str]:
    """The modules the chosen workloads import that are not installed, and
    the extra of each (W9 talks to a model through the OpenAI SDK; the OTel
    rows use the SDK the dev extra brings)."""
    needed = {} if args.only_serve else {"openai": "openai", "opentelemetry.sdk": "dev"}
    if args.postgres and not args.only_serve:
        needed["psycopg"] = "postgres"
    if args.ray and not args.only_serve:
        needed["ray"] = "ray"
    if args.serve or args.only_serve:
        needed.update(starlette="serve", uvicorn="serve", httpx="dev")
    return {name: extra for name, extra in needed.items() if not _installed(name)}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # (its parent package is missing)
        return False


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--ray", action="store_true", help="also W3 and W2 on a local Ray cluster")
    parser.add_argument(
        "--postgres", action="store_true", help="also W10 on a throwaway PostgreSQL cluster"
    )
    parser.add_argument("--serve", action="store_true", help="also W11: stepgraph serve")
    parser.add_argument("--only-serve", action="store_true", help="W11 alone")
    args = parser.parse_args()
    missing = _missing(args)
    if missing:  # (said now, not after minutes of measuring)
        sys.exit(
            f"python -m benchmarks needs {', '.join(sorted(missing))}: pip install -e "
            f"'.[{','.join(sorted(set(missing.values())))}]'"
        )
    rows = [] if args.only_serve else run(args.quick, args.postgres)
    if args.ray and not args.only_serve:
        rows += ray_rows(args.quick)
    if args.serve or args.only_serve:
        from . import serve

        rows += [
            Row(name, unit, value, None, target, ok)
            for name, unit, value, target, ok in serve.rows(args.quick)
        ]
    print(render(rows))


if __name__ == "__main__":
    main()
