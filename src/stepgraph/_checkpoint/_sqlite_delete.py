"""Deleting from the SQLite store without holding writers up.

A run's checkpoints are deleted in short transactions with pauses between
them, and what must be read to delete them — which values the rest of the
run references, the segments that lose only some checkpoints — is read
before the write lock is taken (a read in WAL mode waits for nobody).
"""

from __future__ import annotations

import sqlite3

from ._segments import DeletionPlan, Segment
from ._sqlite_layout import chunks, marks

__all__ = ["CHUNK", "MAX_PAUSE", "Plan", "drop_segments", "release"]

CHUNK = 200  # segments (or values) per transaction when deleting a whole run
MAX_PAUSE = 0.05  # longest pause between the transactions of a long deletion


def drop_segments(db: sqlite3.Connection, seqs: list[int]) -> tuple[int, int]:
    """Delete whole segments and their id entries (nothing parsed: works on
    damaged segments too); returns the checkpoints and bytes they held."""
    count = size = 0
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        holes = marks(chunk)
        ids: list[str] = []
        for members, bytes_ in db.execute(
            f"SELECT ids, size FROM segments WHERE seq IN ({holes})", chunk
        ):
            ids += members.split(",")
            size += bytes_
        count += len(ids)
        for part in chunks(ids):
            db.execute(f"DELETE FROM checkpoint_ids WHERE id IN ({marks(part)})", part)
        db.execute(f"DELETE FROM segments WHERE seq IN ({holes})", chunk)
    return count, size


class Plan(DeletionPlan):
    """A deletion's plan, read and finished in SQLite's SQL."""

    @classmethod
    def read(
        cls,
        db: sqlite3.Connection,
        run_id: str,
        doomed: set[str],
        whole: set[int],
        partial: list[int],
    ) -> Plan:
        has_values = db.execute(
            "SELECT 1 FROM run_blobs WHERE run_id = ? LIMIT 1", (run_id,)
        ).fetchone()
        wanted = "seq, data" if has_values else "seq, NULL"
        found = db.execute(
            f"SELECT {wanted} FROM segments WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        plan = cls(run_id, found[-1][0] if found else 0)
        if not has_values:
            plan.refs = None  # nothing to drop
        for seq in partial:
            (data,) = db.execute("SELECT data FROM segments WHERE seq = ?", (seq,)).fetchone()
            plan.rewrite(seq, data, doomed)
        for seq, data in found:
            if seq in whole or seq in plan.rewrites or plan.refs is None:
                continue
            plan.note(data)
        return plan

    def finish(self, db: sqlite3.Connection, doomed: set[str]) -> None:
        """The last transaction: rewrite, unlink the ids, fix the run's
        index entry, drop values nothing references."""
        run_id = self.run_id
        for seq, (old, encoded, ids, size) in list(self.rewrites.items()):
            now = db.execute(
                "SELECT data, ids, size FROM segments WHERE seq = ?", (seq,)
            ).fetchone()
            if now is None:
                continue  # deleted meanwhile
            data, held, held_size = now
            if data != old:  # changed meanwhile (another deletion): redo it
                self.rewrite(seq, data, doomed)
                _, encoded, ids, size = self.rewrites[seq]
            db.execute(
                "UPDATE segments SET data = ?, ids = ?, size = ? WHERE seq = ?",
                (encoded, ids, size, seq),
            )
            db.execute(
                "UPDATE runs SET checkpoints = checkpoints - ?, size = size - ? WHERE run_id = ?",
                (len(held.split(",")) - len(ids.split(",")), held_size - size, run_id),
            )
        for chunk in chunks(sorted(doomed)):
            db.execute(f"DELETE FROM checkpoint_ids WHERE id IN ({marks(chunk)})", chunk)
        latest = db.execute(
            "SELECT seq, data FROM segments WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
        ).fetchone()
        if latest is None:  # nothing left of the run
            release(db, run_id, None)
            forget_run(db, run_id)
            return
        (current,) = db.execute(
            "SELECT last_checkpoint FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if current in doomed:  # its latest checkpoint went: an earlier one is latest now
            last = Segment(latest[1]).last()
            db.execute(
                "UPDATE runs SET last_checkpoint = ?, superstep = ?, pending_requests = ?, "
                "status = ?, error = NULL WHERE run_id = ?",
                (last.id, last.superstep, last.pending_requests, last.status, run_id),
            )
        if self.refs is None:
            return
        for (data,) in db.execute(  # written while this plan was made
            "SELECT data FROM segments WHERE run_id = ? AND seq > ?", (run_id, self.upto)
        ).fetchall():
            self.note(data)
        if self.refs is not None:
            release(db, run_id, self.refs)


def release(db: sqlite3.Connection, run_id: str, keep: set[str] | None) -> None:
    """Drop the run's references to values other than ``keep`` (all, for
    ``None``), and the values no run references any more."""
    held = [h for (h,) in db.execute("SELECT hash FROM run_blobs WHERE run_id = ?", (run_id,))]
    dropped = [h for h in held if keep is None or h not in keep]
    for chunk in chunks(dropped):
        holes = marks(chunk)
        db.execute(
            f"DELETE FROM run_blobs WHERE run_id = ? AND hash IN ({holes})", [run_id, *chunk]
        )
        db.execute(
            f"DELETE FROM blobs WHERE hash IN ({holes}) AND NOT EXISTS "
            "(SELECT 1 FROM run_blobs r WHERE r.hash = blobs.hash)",
            chunk,
        )


def forget_run(db: sqlite3.Connection, run_id: str) -> bool:
    """Drop what the store keeps of a run besides its checkpoints and
    values; whether it had an index entry."""
    db.execute("DELETE FROM requests WHERE run_id = ?", (run_id,))
    db.execute("DELETE FROM cancels WHERE run_id = ?", (run_id,))
    db.execute("DELETE FROM answers WHERE run_id = ?", (run_id,))
    db.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
    return db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0
