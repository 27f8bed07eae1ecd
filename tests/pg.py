"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary
folder, ``pg_ctl start`` listening on a Unix socket in that folder only (no
TCP), ``pg_ctl stop -m immediate`` and the folder removed at the end.

initdb refuses to run as root: as root, the server's binaries run as
``nobody`` (``runuser -u nobody --``), which owns the folder. Fixtures:
``postgres_dsn`` (one cluster per session, its ``stepgraph`` database) and
``pg_dsn`` (a new database per test, so tests never see each other's rows).
They fail, never skip, when the binaries are missing.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["Cluster", "own_cluster", "pg_dsn", "postgres_dsn"]

_BINARIES = ("initdb", "pg_ctl", "postgres")
_SUPERUSER = "stepgraph"


def find_binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: on PATH, in
    /usr/local/bin, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).parent] if on_path else []
    candidates.append(Path("/usr/local/bin"))
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    candidates += [Path(p) for p in reversed(debian)]
    for folder in candidates:
        if all((folder / name).is_file() for name in _BINARIES):
            return folder
    return None


def _free_port() -> int:
    # Only names the socket file (.s.PGSQL.<port>) in our own folder; a free
    # TCP port all the same, so a log line never looks like another server's.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """One PostgreSQL cluster in a temporary folder; ``start``/``stop``."""

    def __init__(self, binaries: Path, *, durable: bool = False) -> None:
        self.binaries = binaries
        self.durable = durable  # fsync and synchronous commits, as in production
        self.root = Path(tempfile.mkdtemp(prefix="stepgraph-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self._databases = itertools.count()

    def _command(self, name: str, *args: str) -> list[str]:
        command = [str(self.binaries / name), *args]
        return ["runuser", "-u", "nobody", "--", *command] if self.as_root else command

    def _run(self, name: str, *args: str) -> None:
        done = subprocess.run(
            self._command(name, *args), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{name} failed ({done.returncode}): {done.stderr or done.stdout}\n{tail}"
            )

    def start(self) -> None:
        if self.as_root:  # the server runs as nobody, who must own its folder
            shutil.chown(self.root, "nobody")
            self.root.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", _SUPERUSER, "--auth=trust",
                  "-E", "UTF8", "--no-sync")  # fmt: skip
        self.resume()
        self.create_database("stepgraph")

    def resume(self) -> None:
        """Start the server (again, after ``halt``)."""
        options = f"-k {self.root} -c listen_addresses='' -p {self.port} -c max_connections=300"
        if not self.durable:  # tests need no durability across power loss: faster
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o", options, "start")  # fmt: skip

    def halt(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: as in a crash, every session cut
        with no goodbye; ``fast``: each told it is ended) and start it again."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-m",
                  mode, "-w", "-t", "60", "restart")  # fmt: skip

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():  # (not halted)
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, database: str) -> str:
        return f"postgresql:///{database}?host={self.root}&port={self.port}&user={_SUPERUSER}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its DSN."""
        import psycopg

        name = name or f"test_{next(self._databases)}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # (a name made here, never user input)
        return self.dsn(name)


@contextmanager
def own_cluster(*, durable: bool = False) -> Iterator[Cluster]:
    """A cluster of the test's own, started (for tests that stop, restart or
    halt its server), stopped and removed after."""
    binaries = find_binaries()
    assert binaries is not None, "PostgreSQL's server programs are needed (Debian: postgresql)"
    cluster = Cluster(binaries, durable=durable)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


_cluster: Cluster | None = None


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A running throwaway cluster for the session: its ``stepgraph`` database."""
    global _cluster
    binaries = find_binaries()
    if binaries is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH, in "
            "/usr/local/bin or /usr/lib/postgresql/*/bin: install PostgreSQL (Debian: "
            "apt-get install postgresql) to run the Postgres store tests"
        )
    cluster = Cluster(binaries)
    try:
        cluster.start()
    except BaseException:
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise
    _cluster = cluster
    try:
        yield cluster.dsn("stepgraph")
    finally:
        _cluster = None
        cluster.stop()


@pytest.fixture
def pg_dsn(postgres_dsn: str) -> str:
    """A new empty database in the session's cluster, for one test."""
    assert _cluster is not None
    return _cluster.create_database()
