"""Segments: how the SQLite store packs the checkpoints one ``save`` writes.

Consecutive checkpoints of one run that one ``save`` writes are stored
together as one *segment*: a JSON document ``[format, run_id, workflow,
signature, [entry, ...]]`` whose entries hold each checkpoint's own fields,
its body and its signature. A batch of async checkpoints thus costs one JSON
encoding and one row instead of a wide row and a separate encoding each. A
segment is cut at ``SEGMENT_BYTES`` (a larger single checkpoint has one of
its own), so loading one checkpoint reads little besides it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .._exceptions import CheckpointDecodeError, CheckpointEncodeError, CheckpointIntegrityError
from ._codec import dumps_compact, loads
from ._model import FORMAT, Checkpoint, Row, body_bytes, check_types, seal, split_refs

__all__ = [
    "SEGMENT_BYTES",
    "DeletionPlan",
    "Packed",
    "Segment",
    "encode_segments",
    "holding",
    "newest_first",
    "page_of",
    "parse_segments",
    "picked",
    "reencode",
]

SEGMENT_BYTES = 1 << 20  # a longer batch is split (a bigger checkpoint has its own)


@dataclass(frozen=True, slots=True)
class Packed:
    """One segment ready to store: its rows' ids, their checkpoints, its
    bytes, and what it takes in the store (its bytes and its new values)."""

    run_id: str
    workflow: str
    data: bytes
    checkpoints: list[Checkpoint]
    size: int

    @property
    def ids(self) -> str:
        return ",".join(cp.id for cp in self.checkpoints)


def encode_segments(
    checkpoints: tuple[Checkpoint, ...], blob_bytes: list[int], secret: bytes | None
) -> list[Packed]:
    """The segments of a save, in save order: consecutive checkpoints that
    share run, workflow and graph signature, encoded in one go; a group over
    ``SEGMENT_BYTES`` is encoded entry by entry and packed into segments up
    to that size."""
    groups: list[tuple[tuple[str, str, str], list[Checkpoint], list[Any], list[int]]] = []
    for cp, size in zip(checkpoints, blob_bytes, strict=True):
        key = (cp.run_id, cp.workflow, cp.signature)
        if not groups or groups[-1][0] != key:
            groups.append((key, [], [], []))
        groups[-1][1].append(cp)
        groups[-1][2].append(_entry(cp, size, secret))
        groups[-1][3].append(size)
    out: list[Packed] = []
    for (run_id, workflow, signature), group, entries, sizes in groups:
        try:
            data = dumps_compact([FORMAT, run_id, workflow, signature, entries])
            if len(data) <= SEGMENT_BYTES or len(entries) == 1:
                out.append(Packed(run_id, workflow, data, group, len(data) + sum(sizes)))
                continue
            head = dumps_compact([FORMAT, run_id, workflow, signature])[:-1] + b",["
            pieces = [dumps_compact(entry) for entry in entries]
        except (TypeError, ValueError) as exc:
            for cp in group:
                body_bytes(cp)  # names the checkpoint whose body is at fault
            raise CheckpointEncodeError(f"checkpoints of run {run_id!r}: {exc}") from exc
        start = 0
        while start < len(pieces):
            end, size = start + 1, len(pieces[start])
            while end < len(pieces) and size + len(pieces[end]) <= SEGMENT_BYTES:
                size += len(pieces[end])
                end += 1
            data = head + b",".join(pieces[start:end]) + b"]]"
            part = group[start:end]
            out.append(Packed(run_id, workflow, data, part, len(data) + sum(sizes[start:end])))
            start = end
    return out


def _entry(cp: Checkpoint, blob_bytes: int, secret: bytes | None) -> list[Any]:
    mac = None if secret is None else seal(cp, blob_bytes, secret)[-1].hex()
    return [
        cp.id,
        cp.parent_id,
        cp.superstep,
        cp.created_at,
        cp.status,
        cp.pending_requests,
        ",".join(cp.refs),
        blob_bytes,
        cp.body,
        mac,
    ]


class Segment:
    """A stored segment, parsed; its rows are built only when asked for (a
    body's bytes are its compact re-encoding: exactly the bytes that were
    signed, as parsing and writing JSON round-trip). Anything malformed is a
    ``CheckpointIntegrityError``."""

    def __init__(self, data: Any, of: str = "") -> None:
        self._of = of  # what it holds, for messages: "of checkpoint 'x'", "of run 'r'"
        with corrupt_segment(of):
            if not isinstance(data, bytes):
                raise TypeError("not a blob")
            layout, self.run_id, self.workflow, self.signature, self.entries = loads(data)
            if layout != FORMAT or not isinstance(self.entries, list) or not self.entries:
                raise ValueError(f"unknown format {layout!r} or no entries")

    def rows(self) -> list[Row]:
        return [self.row(entry) for entry in self.entries]

    def find(self, checkpoint_id: str) -> Row:
        """The row of one checkpoint the store's id index puts here."""
        for entry in self.entries:
            if isinstance(entry, list) and entry and entry[0] == checkpoint_id:
                return self.row(entry)
        raise CheckpointIntegrityError(f"checkpoint {checkpoint_id!r} is missing from its segment")

    def pick(self, ids: set[str]) -> list[Row]:
        """The rows of those of ``ids`` it holds (the others are not built)."""
        return [
            self.row(entry)
            for entry in self.entries
            if isinstance(entry, list) and entry and entry[0] in ids
        ]

    def last(self) -> Row:
        return self.row(self.entries[-1])

    def row(self, entry: Any) -> Row:
        with corrupt_segment(self._of):
            cid, parent, step, created, status, pending, refs, blob_bytes, body, mac = entry
            if type(blob_bytes) is not int:
                raise TypeError("a size is not an int")
            encoded = dumps_compact(body)
            row = Row(
                cid,
                self.run_id,
                self.workflow,
                self.signature,
                parent,
                step,
                created,
                status,
                pending,
                refs,
                blob_bytes + len(encoded),
                encoded,
                None if mac is None else _signature(mac),
            )
        check_types(row)
        return row

    def refs(self) -> list[str]:
        """Each checkpoint's ``refs`` field, nothing else decoded."""
        with corrupt_segment(self._of):
            refs = [entry[6] for entry in self.entries]
            if not all(isinstance(r, str) for r in refs):
                raise TypeError("a refs field is not a string")
        return refs


def _signature(mac: Any) -> bytes:
    try:
        return bytes.fromhex(mac)
    except (TypeError, ValueError):
        raise ValueError("its signature is not hexadecimal text") from None


@contextmanager
def corrupt_segment(of: str = "") -> Iterator[None]:
    try:
        yield
    except (CheckpointDecodeError, TypeError, ValueError, IndexError, KeyError) as exc:
        where = f" {of}" if of else ""
        raise CheckpointIntegrityError(
            f"the stored checkpoint segment{where} is corrupt: {exc}"
        ) from exc


def parse_segments(records: Iterable[tuple[str, str, Any]]) -> tuple[list[Row], list[str]]:
    """The rows of stored segments, given as ``(run id, ids, data)``, and a
    description of each damaged segment skipped."""
    rows: list[Row] = []
    damaged: list[str] = []
    for run, ids, data in records:
        try:
            rows += Segment(data).rows()
        except CheckpointIntegrityError as exc:
            damaged.append(f"checkpoints {ids} of run {run}: {exc}")
    return rows, damaged


def newest_first(
    table: str, mark: str, run_id: str, before: int | None, count: int
) -> tuple[str, list[Any]]:
    """The statement (and its arguments) reading ``count`` of a run's
    segments, the newest first, from just before segment ``before`` (a
    store's ``_rows_page``); ``table`` is the store's constant, ``mark`` its
    parameter mark."""
    sql = f"SELECT seq, run_id, ids, data FROM {table} WHERE run_id = {mark}"
    args: list[Any] = [run_id]
    if before is not None:
        sql += f" AND seq < {mark}"
        args.append(before)
    args.append(count)
    return sql + f" ORDER BY seq DESC LIMIT {mark}", args


def holding(table: str, ids_table: str, mark: str, ids: list[str]) -> str:
    """The statement reading the segments that hold these checkpoints, each
    once (``table`` and ``ids_table`` are the store's constants, ``mark``
    its parameter mark, one per id)."""
    marks = ",".join([mark] * len(ids))
    return (
        f"SELECT run_id, data FROM {table} WHERE seq IN "
        f"(SELECT segment FROM {ids_table} WHERE id IN ({marks}))"
    )


def picked(found: Iterable[tuple[Any, ...]], ids: list[str]) -> dict[str, Row]:
    """The rows of ``ids`` in the segments ``holding`` read, by id."""
    wanted = set(ids)
    return {
        row.id: row for run, data in found for row in Segment(data, f"of run {run!r}").pick(wanted)
    }


def page_of(found: list[tuple[Any, ...]], count: int) -> tuple[list[Row], list[str], int | None]:
    """What ``newest_first`` read: its rows in save order, the damaged
    segments skipped, and where the next page starts (``None``: no more)."""
    rows, damaged = parse_segments((run, ids, data) for _, run, ids, data in reversed(found))
    return rows, damaged, found[-1][0] if len(found) == count else None


def reencode(rows: list[Row]) -> tuple[bytes, int]:
    """A segment of rows read from one (what remains when some are
    deleted), and the store bytes it takes."""
    first = rows[0]
    entries = [
        [r.id, r.parent_id, r.superstep, r.created_at, r.status, r.pending_requests, r.refs,
         r.size - len(r.body), loads(r.body), None if r.mac is None else r.mac.hex()]
        for r in rows
    ]  # fmt: skip
    data = dumps_compact([FORMAT, first.run_id, first.workflow, first.signature, entries])
    return data, len(data) + sum(r.size - len(r.body) for r in rows)


class DeletionPlan:
    """What deleting checkpoints of one run changes, read before any lock
    is taken: the partly deleted segments rewritten, and the values the rest
    of the run references (``None`` when a damaged segment hides them, so
    none is dropped). Each store's ``Plan`` reads and finishes it in its own
    SQL."""

    def __init__(self, run_id: str, upto: int) -> None:
        self.run_id = run_id
        self.upto = upto  # the newest segment read; newer ones are read at the end
        self.refs: set[str] | None = set()
        self.rewrites: dict[int, tuple[bytes, bytes, str, int]] = {}  # seq -> old, new, ids, size

    def rewrite(self, seq: int, data: bytes, doomed: set[str]) -> None:
        kept = [r for r in Segment(data).rows() if r.id not in doomed]
        encoded, size = reencode(kept)
        self.rewrites[seq] = (data, encoded, ",".join(r.id for r in kept), size)
        if self.refs is not None:
            for row in kept:
                self.refs.update(row.ref_list)

    def note(self, data: bytes) -> None:
        """Add the values one remaining segment references."""
        if self.refs is None:
            return
        try:
            for field in Segment(data).refs():
                self.refs.update(split_refs(field))
        except CheckpointIntegrityError:
            self.refs = None  # a damaged segment's values are unknown: keep them all
