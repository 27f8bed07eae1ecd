"""W11: ``stepgraph serve`` under followers — 100 SSE clients on one run,
50 concurrent runs each followed, and an idle server with streams open.

The server is a separate process (as users run it); latency is from a
handler emitting an event (its timestamp, in the event) to a client having
parsed it, on one machine's clock. Server CPU is read from /proc."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int, key: str = "VmHWM") -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


async def _follow(client: httpx.AsyncClient, run_id: str, lags: list[float]) -> int:
    """Follow the run's stream to its end on a bare connection (a light
    client, so that many of them measure the server rather than themselves)."""
    host, port = client.base_url.host, client.base_url.port
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    got = 0
    try:
        async for raw in reader:
            if raw.startswith(b"data: {") and b'"kind": "tick"' in raw:
                record = json.loads(raw[6:])
                lags.append(time.time() - record["data"]["t"])
                got += 1
            elif raw.startswith(b"event: end"):
                break
    finally:
        writer.close()
    return got


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3


async def _measure(
    url: str, pid: int, followers: int, runs: int, ticks: int, every: float
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=followers * runs + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        body = {"input": {"count": ticks, "every": every, "first": 1.0}}
        cpu = _cpu(pid)
        started = time.perf_counter()
        ids = [
            (await client.post("/api/workflows/ticker/runs", json=body)).json()["run_id"]
            for _ in range(runs)
        ]
        lags: list[float] = []
        got = await asyncio.gather(
            *(_follow(client, run_id, lags) for run_id in ids for _ in range(followers))
        )
        elapsed = time.perf_counter() - started
        assert min(got) >= ticks - 2, f"a follower missed events: {min(got)} of {ticks}"
        return {
            "p50": _pct(lags, 0.5),
            "p99": _pct(lags, 0.99),
            "cpu": (_cpu(pid) - cpu) / elapsed * 100,
            "rss": _rss_mib(pid),
        }


async def _idle(url: str, pid: int, streams: int, window: float) -> tuple[float, float]:
    """Server CPU seconds over ``window`` seconds: with nothing going on; then
    with ``streams`` streams following a run whose handler waits."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.sleep(1.0)
        cpu = _cpu(pid)
        await asyncio.sleep(window)
        idle = _cpu(pid) - cpu
        body = {"input": {"count": 1, "every": window + 5}}
        run_id = (await client.post("/api/workflows/ticker/runs", json=body)).json()["run_id"]
        followers = [asyncio.ensure_future(_follow(client, run_id, [])) for _ in range(streams)]
        await asyncio.sleep(1.0)
        cpu = _cpu(pid)
        await asyncio.sleep(window)
        waiting = _cpu(pid) - cpu
        await client.post(f"/api/runs/{run_id}/cancel", json={})
        await asyncio.gather(*followers)
        return idle, waiting


def rows(quick: bool) -> list[tuple[str, str, float, str, bool | None]]:
    """(name, unit, value, target, ok) rows."""
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [sys.executable, "-m", "stepgraph", "serve", "benchmarks.serve_flows:ticker",
             "--store", f"sqlite:{tmp}/serve.sqlite", "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            url = re.search(r"(http://\S+)/", line).group(1)  # type: ignore[union-attr]
            ticks = 50 if quick else 200
            # One run ticking every 10 ms followed by 100 clients; 50 runs
            # ticking every 50 ms (1,000 supersteps a second in all), each followed.
            fan = asyncio.run(_measure(url, server.pid, 100, 1, ticks, 0.01))
            many = asyncio.run(_measure(url, server.pid, 1, 50, ticks // 2, 0.05))
            window = 2.0 if quick else 10.0
            idle, waiting = asyncio.run(_idle(url, server.pid, 20, window))
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=30)
    out: list[tuple[str, str, float, str, bool | None]] = []
    for name, m in (("W11 100 SSE on 1 run", fan), ("W11 50 runs, 1 SSE each", many)):
        out.append((name, "ms p50 latency", m["p50"], "", None))
        out.append((name, "ms p99 latency", m["p99"], "", None))
        out.append((name, "server CPU %", m["cpu"], "", None))
        out.append((name, "server RSS MiB", m["rss"], "", None))
    # /proc counts CPU time in clock ticks (10 ms): at most one in the window.
    out.append(
        (f"W11 idle {window:.0f} s", "server CPU ms", idle * 1e3, "<= 10 ms", idle <= 0.0101)
    )
    out.append(("W11 20 SSE, run waits", "server CPU ms", waiting * 1e3, "", None))
    return out
