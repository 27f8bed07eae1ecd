"""Loading what the command line names: workflows, JSON, stores.

Every problem becomes a :class:`CliError` with one clear line: a module that
fails to import, a factory that needs arguments, a file that is not text,
JSON nested too deeply, a store that does not exist.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import re
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._checkpoint import SqliteCheckpointStore
from .._checkpoint._postgres import PostgresCheckpointStore
from .._core import a_type
from .._exceptions import StepgraphError
from .._workflow import Workflow

__all__ = [
    "DEFAULT_STORE",
    "CliError",
    "CliStore",
    "is_postgres",
    "load_target",
    "load_workflow",
    "in_named_store",
    "missing_store",
    "not_a_store_file",
    "special_kind",
    "open_store",
    "parse_json",
    "quoting_hint",
    "read_text",
    "StoreMode",
]

DEFAULT_STORE = "sqlite:.stepgraph/checkpoints.sqlite"


class CliError(Exception):
    """A usage problem, reported in one line (exit code 1)."""


def load_workflow(target: str) -> Workflow:
    """``MODULE:ATTR`` — a ``Workflow``, or a zero-argument function returning one.
    The current directory is importable, like ``python -m``."""
    return load_target(target)[0]


def load_target(target: str) -> tuple[Workflow, Callable[[], Workflow] | None]:
    """The workflow ``MODULE:ATTR`` names, and the function that built it
    (``None`` when it names a ``Workflow``)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"expected MODULE:ATTR (e.g. myflows:build), got {target!r}")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        file = Path(module_name)
        dotted = ".".join(file.with_suffix("").parts).lstrip(".")
        raise CliError(
            f"name a module, not a file: {dotted}:{attr} from here"
            + (f" (or {file.stem}:{attr} from {file.parent})" if dotted != file.stem else "")
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise CliError(
                f"no module named {exc.name!r} (the current directory is importable: run from "
                "the folder that holds it, or check the name)"
            ) from None
        raise CliError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:  # its own code raised while importing
        raise CliError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:  # (a script's sys.exit: its code would pass for the run's)
        raise CliError(f"importing {module_name!r} called sys.exit({exc.code!r})") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    factory = None
    if not isinstance(obj, Workflow) and inspect.iscoroutinefunction(obj):
        # (called, it would only make a coroutine nobody awaits — and Python
        # would warn about it on the way out)
        raise CliError(
            f"{target} is an async function; name a Workflow or a plain function returning one"
        )
    if not isinstance(obj, Workflow) and callable(obj):
        factory, obj = obj, _call_factory(obj, target)
    if inspect.isawaitable(obj):
        if inspect.iscoroutine(obj):
            obj.close()  # (never awaited: no warning about it)
        raise CliError(
            f"{target} returned {a_type(type(obj))} (is it async?), not a Workflow; name a "
            "Workflow or a plain function returning one"
        )
    if obj is None:
        raise CliError(f"{target} returned None, not a Workflow")
    if not isinstance(obj, Workflow) and factory is not None:
        raise CliError(f"{target} returned {a_type(type(obj))}, not a Workflow")
    if not isinstance(obj, Workflow):
        raise CliError(
            f"{target} is {a_type(type(obj))}, not a Workflow (or a function returning one)"
        )
    return obj, factory


def _call_factory(factory: Any, target: str) -> Any:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        needed = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if needed:
            raise CliError(
                f"{target} needs arguments ({', '.join(needed)}); name a Workflow or a function "
                "that takes none"
            )
    try:
        return factory()
    except Exception as exc:
        raise CliError(f"{target}() failed: {type(exc).__name__}: {exc}") from None
    except SystemExit as exc:
        raise CliError(f"{target}() called sys.exit({exc.code!r})") from None


_BARE_WORD = re.compile(r"[^\s\"'\[\]{}0-9.+-][^\"'\[\]{}]*")


def json_value(text: str | bytes) -> Any:
    """Strict JSON, as input from the command line or over HTTP: NaN,
    Infinity and numbers too large for a float (``1e999``) are refused with
    a ``ValueError``, as JSON has no such values."""
    return json.loads(text, parse_constant=_not_json, parse_float=_finite)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def parse_json(text: str, what: str, hint: Callable[[str], str] | None = None) -> Any:
    """``text`` as JSON. A bare word (``hello``) gets a hint: ``hint(word)``
    — what the expected type takes — or else that JSON strings need quotes."""
    try:
        return json_value(text)
    except RecursionError:
        raise CliError(f"{what} is nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        word = text.strip()
        tip = ""
        if (not word or _BARE_WORD.fullmatch(word)) and word not in ("true", "false", "null"):
            tip = "; " + (hint(word) if hint is not None else quoting_hint(word))
        if not word:
            raise CliError(f"{what} is empty{tip}") from None
        raise CliError(f"{what} is not valid JSON: {exc}{tip}") from None
    except ValueError as exc:  # (NaN, Infinity, 1e999; a 5,000-digit number)
        raise CliError(f"{what} is not valid JSON: {exc}") from None


def quoting_hint(word: str) -> str:
    return f"JSON strings need quotes: '{json.dumps(word, ensure_ascii=False)}'"


def read_text(path: Path, what: str) -> str:
    """A UTF-8 file's text (a byte-order mark is dropped); ``-`` is standard input."""
    try:
        if str(path) == "-":
            return sys.stdin.buffer.read().decode("utf-8-sig")
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start} cannot be read)"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None


class StoreMode(Enum):
    READ = "read"  # must exist; opened read-only
    WRITE = "write"  # must exist
    CREATE = "create"  # created if missing (its folder too, for the default store)


# The stores the command line opens.
CliStore = SqliteCheckpointStore | PostgresCheckpointStore
_KINDS = "sqlite:PATH or postgresql://..."


def is_postgres(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def shown_store(spec: str) -> str:
    """The store as the command line prints it: without a password — in a
    URL's address, or as a ``password=`` parameter or keyword (libpq reads
    it from ``PGPASSWORD`` or ``~/.pgpass`` instead) — whatever the kind,
    even one mistyped."""
    if "://" in spec:
        parts = urlsplit(spec)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hosts = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}@{hosts}" if user else hosts
        query = "&".join(
            p for p in parts.query.split("&") if p and not p.lower().startswith("password=")
        )
        if netloc != parts.netloc or query != parts.query:
            scheme = spec.partition("://")[0]  # (as typed: urlsplit lowers its case)
            spec = f"{scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    return _PASSWORD_KEYWORD.sub("password=…", spec)


def in_named_store(text: str, spec: str) -> str:
    """A store's "no run ... in this store" (or checkpoint) naming the store
    as given, without its password, as the command line's own messages do."""
    return _IN_THIS_STORE.sub(lambda m: f" in {shown_store(spec)}{m[1] or ''}", text)


# (the stores' wording: "no run 'x' in this store", "... in this store (before=)")
_IN_THIS_STORE = re.compile(r" in this store( \(before=\))?$")


def _secret_problem(error: Exception) -> str:
    text = str(error)
    return f"STEPGRAPH_SECRET: {text}" if isinstance(error, ValueError) else text


# A ``password=`` keyword of a libpq connection string, quoted or not.
_PASSWORD_KEYWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)


def store_path(spec: str) -> Path:
    """The file of a ``sqlite:PATH`` store. A bare path is refused rather
    than taken as a file name, so a typo never creates a store where nobody
    looks for it."""
    kind, sep, path = spec.partition(":")
    if kind == "sqlite" and path and str(Path(path)) == ":memory:":  # (./:memory: too)
        raise CliError(  # (SQLite's name for a database in memory)
            f"the store {spec!r} is SQLite's in-memory database, gone when the command ends "
            "(nothing could be answered, resumed or listed): give a file, sqlite:PATH (a "
            "file of that name by its full path), or --no-store"
        )
    if kind == "sqlite" and path:
        return Path(path).expanduser()  # (quoted, the shell left ~ as it is)
    if not spec.strip():
        raise CliError(f"--store is empty: give {_KINDS}")
    if not sep:
        shown = shown_store(spec)
        guess = "postgresql://USER@HOST/DB, as a URL" if "=" in spec else f"sqlite:{shown}"
        raise CliError(f"store {shown!r} names no kind: give {_KINDS} ({guess}?)")
    if kind == "sqlite":
        raise CliError(f"the store {spec!r} names no file: use sqlite:PATH")
    if is_postgres(spec):
        raise CliError(f"{shown_store(spec)!r} is a PostgreSQL database, not a file")
    raise CliError(f"unknown store {shown_store(spec)!r}: give {_KINDS}")


def store_secret() -> str | None:
    """The stores' signing secret, from ``STEPGRAPH_SECRET`` (an environment
    variable: never an option, which process lists and shell histories show)."""
    return os.environ.get("STEPGRAPH_SECRET") or None


def missing_store(spec: str, path: Path) -> str:
    """What to say of a store file that is not there. The default one is
    relative to the current folder: from another folder, it is not found."""
    if spec != DEFAULT_STORE:
        return f"no checkpoint store at {str(path)!r} (no such file)"
    return (
        f"no checkpoint store at {str(path)!r} (no such file): the default store is looked "
        f"for in the current folder ({os.getcwd()}); run from the folder the runs were started "
        "in, or give --store sqlite:PATH"
    )


def not_a_store_file(path: Path) -> str | None:
    """Why an existing path cannot be a store file, if it cannot: a folder,
    a pipe, a device... or a file the system makes up as it is read (in
    /proc or /sys), whose size reads 0 -- SQLite would take it for an empty
    database."""
    if path.is_dir():
        return f"{str(path)!r} is a folder, not a checkpoint store file"
    if path.exists() and not path.is_file():  # (SQLite would wait on a pipe for ever)
        return f"{str(path)!r} is {special_kind(path)}, not a checkpoint store file"
    if path.is_file() and _made_up(path):
        return (
            f"{str(path)!r} is not a regular file (the system makes it up as it is read, "
            "as in /proc or /sys: its size reads 0), not a checkpoint store file"
        )
    return None


def _made_up(path: Path) -> bool:
    """Whether a file whose size reads 0 gives bytes when read."""
    try:
        if path.stat().st_size:
            return False
        with path.open("rb") as file:
            return bool(file.read(1))
    except OSError:
        return False  # (unreadable: SQLite says so)


def special_kind(path: Path) -> str:
    """What a path that is neither a file nor a folder is."""
    if path.is_fifo():
        return "a named pipe"
    if path.is_char_device() or path.is_block_device():
        return "a device"
    if path.is_socket():
        return "a socket"
    return "not a regular file"


def open_store(spec: str, mode: StoreMode) -> CliStore:
    secret = store_secret()
    if is_postgres(spec):
        try:
            # (only a command that starts runs creates the tables)
            postgres = PostgresCheckpointStore(spec, create=mode is StoreMode.CREATE, secret=secret)
        except (ImportError, ValueError) as exc:
            raise CliError(_secret_problem(exc)) from None
        try:
            postgres.open()  # unreachable, another layout: say so now
            if mode is not StoreMode.READ:
                postgres.check_writable()  # (a reading role: not at the first save)
        except StepgraphError as exc:
            postgres.close()
            raise CliError(str(exc)) from None
        return postgres
    path = store_path(spec)
    if (problem := not_a_store_file(path)) is not None:
        raise CliError(problem)
    if mode is not StoreMode.CREATE and not path.exists():
        raise CliError(missing_store(spec, path))
    if mode is StoreMode.CREATE and not path.exists():
        if spec == DEFAULT_STORE:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # (.stepgraph is a file; a read-only folder)
                raise CliError(
                    f"cannot create the default checkpoint store {str(path)!r}: "
                    f"{exc.strerror or exc} ({str(path.parent)!r}); give another with "
                    "--store sqlite:PATH, or --no-store"
                ) from None
        elif not path.parent.is_dir():
            raise CliError(
                f"cannot create checkpoint store {str(path)!r}: the folder "
                f"{str(path.parent)!r} does not exist"
            )
    if mode is not StoreMode.READ:
        _check_writable(path)
    # (as on PostgreSQL: only a command that starts runs creates the tables,
    # even in an empty file that exists)
    try:
        store = SqliteCheckpointStore(
            path, readonly=mode is StoreMode.READ, create=mode is StoreMode.CREATE, secret=secret
        )
    except ValueError as exc:
        raise CliError(_secret_problem(exc)) from None
    try:
        store.open()  # a folder, another kind of file, another layout: say so now
    except StepgraphError as exc:
        store.close()
        raise CliError(str(exc)) from None
    return store


def _check_writable(path: Path) -> None:
    """Refuse, naming the file or folder, a store this process cannot write
    — SQLite would say only "unable to open database file", or the run would
    fail at its first checkpoint. SQLite (in WAL mode) also writes a
    ``-wal`` and a ``-shm`` file beside the store: its folder must take
    them, unless they are there already — beside the file a symbolic link
    leads to, which is where SQLite puts them."""
    path = path.resolve()
    folder = path.parent
    writable_folder = os.access(folder, os.W_OK)
    if not path.exists():
        if not folder.is_dir():  # (a symbolic link into a folder that is not there)
            raise CliError(
                f"cannot create checkpoint store {str(path)!r}: the folder {str(folder)!r} "
                "does not exist"
            )
        if not writable_folder:
            raise CliError(
                f"cannot create checkpoint store {str(path)!r}: the folder {str(folder)!r} is "
                "read-only here (a read-only file system, or another user's folder)"
            )
        return
    if not os.access(path, os.W_OK):
        raise CliError(
            f"cannot write checkpoint store {str(path)!r}: the file is read-only here (its "
            "permissions, or a read-only file system); the reading commands (checkpoints "
            "list, show) work on it"
        )
    beside = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    if not writable_folder and not all(os.access(p, os.W_OK) for p in beside):
        raise CliError(
            f"cannot write checkpoint store {str(path)!r}: its folder {str(folder)!r} is "
            f"read-only here, and SQLite writes its {path.name}-wal and {path.name}-shm files "
            "beside it; the reading commands (checkpoints list, show) work on it"
        )
