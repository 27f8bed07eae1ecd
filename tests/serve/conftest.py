"""A real server on loopback for each test (uvicorn in a thread), and a client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import stepgraph as sg
from stepgraph._serve import RunService, ServedWorkflow, create_app

from . import flows


@dataclass
class Served:
    url: str
    service: RunService
    store: sg.SqliteCheckpointStore
    token: str | None
    loop: asyncio.AbstractEventLoop
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, token: str | None = ..., **kw: Any) -> httpx.Client:  # type: ignore[assignment]
        token = self.token if token is ... else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=20, **kw)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run a coroutine function on the server's loop; its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(20)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """Stop as ``stepgraph serve`` stops: its runs interrupted and its
        event streams ended, then the server gone (its port free)."""
        self.call(self.service.close)
        self.server.should_exit = True
        self.thread.join(20)
        assert not self.thread.is_alive(), "the server did not stop"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    running: list[tuple[uvicorn.Server, threading.Thread, sg.SqliteCheckpointStore]] = []

    def start(
        *targets: Callable[[], sg.Workflow],
        token: str | None = None,
        store: sg.SqliteCheckpointStore | None = None,
        max_body: int = 1 << 20,
        port: int = 0,
        **options: Any,
    ) -> Served:
        store = store or sg.SqliteCheckpointStore(tmp_path / "serve.sqlite")
        served = [ServedWorkflow(t(), t, t.__doc__ or "") for t in (targets or (flows.gate,))]
        service = RunService(served, store, **options)

        async def lifespan_close(app: Any) -> Any:
            yield
            await service.close()

        from contextlib import asynccontextmanager

        app = create_app(
            service, token=token, max_body=max_body, lifespan=asynccontextmanager(lifespan_close)
        )
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        loops: list[asyncio.AbstractEventLoop] = []

        async def main() -> None:
            loops.append(asyncio.get_running_loop())
            await server.serve()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        running.append((server, thread, store))
        return Served(f"http://127.0.0.1:{port}", service, store, token, loops[0], server, thread)

    yield start
    for server, thread, store in running:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "the server did not stop"
        store.close()


def sse(client: httpx.Client, run_id: str, last: int | None = None) -> list[dict[str, Any]]:
    """Every event of the run's stream (read to its end), as parsed records;
    a named event (the final ``end``, ``dropped``) as ``{"kind": name, ...}``,
    with its SSE id, if it has one, as ``sse_id``."""
    import json

    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    out: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/runs/{run_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        name, data, ident = "message", [], None
        for line in response.iter_lines():
            if line == "":
                if data:
                    record = json.loads("\n".join(data))
                    if name != "message":
                        record["kind"] = name
                        if ident is not None:
                            record["sse_id"] = int(ident)
                    else:
                        assert record["id"] == int(ident)
                    out.append(record)
                name, data, ident = "message", [], None
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    data.append(value)
                elif field == "event":
                    name = value
                elif field == "id":
                    ident = value
    return out
