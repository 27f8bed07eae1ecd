"""Deleting from the Postgres store without holding writers up: the
statements and the plan of a partial deletion (the store runs them in short
transactions with pauses between them, see ``PostgresCheckpointStore``).

What must be read to delete checkpoints of a run — which values the rest of
the run references, the segments that lose only some checkpoints — is read
before any lock is taken; the last transaction checks that nothing it read
changed meanwhile.
"""

from __future__ import annotations

from typing import Any

from ._segments import DeletionPlan, Segment

__all__ = [
    "CHUNK",
    "MAX_PAUSE",
    "Plan",
    "drop_oldest",
    "drop_segments",
    "drop_unreferenced",
    "forget_run",
    "lock_run",
]

CHUNK = 200  # segments per transaction when deleting a whole run
MAX_PAUSE = 0.05  # longest pause between the transactions of a long deletion


def lock_run(cur: Any, run_id: str) -> None:
    """Hold the run's index row: its saves wait until this transaction ends."""
    cur.execute("SELECT 1 FROM stepgraph_runs WHERE run_id = %s FOR UPDATE", (run_id,))


def drop_segments(cur: Any, seqs: list[int]) -> tuple[int, int]:
    """Delete whole segments and their ids (nothing parsed: damaged ones go
    too); the checkpoints and bytes they held."""
    if not seqs:
        return 0, 0
    cur.execute("DELETE FROM stepgraph_segments WHERE seq = ANY(%s) RETURNING ids, size", (seqs,))
    ids: list[str] = []
    size = 0
    for members, bytes_ in cur.fetchall():
        ids += members.split(",")
        size += bytes_
    cur.execute("DELETE FROM stepgraph_checkpoint_ids WHERE id = ANY(%s)", (ids,))
    return len(ids), size


def drop_oldest(cur: Any, run_id: str) -> int:
    """Delete the run's oldest ``CHUNK`` segments; the checkpoints they held."""
    cur.execute(
        "SELECT seq FROM stepgraph_segments WHERE run_id = %s ORDER BY seq LIMIT %s",
        (run_id, CHUNK),
    )
    return drop_segments(cur, [seq for (seq,) in cur.fetchall()])[0]


def drop_unreferenced(cur: Any, hashes: list[str]) -> None:
    """Delete the values among ``hashes`` that no run references. Each is
    locked first (in hash order, as saves lock them), then the check runs
    as a new statement: it sees every save that referenced it meanwhile."""
    cur.execute(
        "SELECT hash FROM stepgraph_blobs WHERE hash = ANY(%s) ORDER BY hash FOR UPDATE",
        (sorted(hashes),),
    )
    cur.execute(
        "DELETE FROM stepgraph_blobs b WHERE b.hash = ANY(%s) AND NOT EXISTS "
        "(SELECT 1 FROM stepgraph_run_blobs r WHERE r.hash = b.hash)",
        (sorted(hashes),),
    )


def forget_run(cur: Any, run_id: str) -> list[str]:
    """Delete the run's index row and records (it holds no segment now; the
    transaction holds its row, ``lock_run``); the values it referenced (to
    let go of, see ``drop_unreferenced``)."""
    cur.execute("DELETE FROM stepgraph_run_blobs WHERE run_id = %s RETURNING hash", (run_id,))
    hashes = [h for (h,) in cur.fetchall()]
    for table in (
        "stepgraph_requests",
        "stepgraph_cancels",
        "stepgraph_answers",
        "stepgraph_runs",
    ):  # table names are constants: nothing from outside is formatted into SQL
        cur.execute(f"DELETE FROM {table} WHERE run_id = %s", (run_id,))
    return hashes


class Plan(DeletionPlan):
    """A deletion's plan, read and finished in Postgres' SQL."""

    @classmethod
    def read(
        cls,
        found: list[tuple[Any, ...]],
        run_id: str,
        doomed: set[str],
        whole: set[int],
        partial: list[int],
    ) -> Plan:
        """From the run's segments as ``(seq, data)``, in order."""
        plan = cls(run_id, found[-1][0] if found else 0)
        data_of = dict(found)
        for seq in partial:
            if seq in data_of:
                plan.rewrite(seq, data_of[seq], doomed)
        for seq, data in found:
            if seq not in whole and seq not in plan.rewrites:
                plan.note(data)
        return plan

    def finish(self, cur: Any, doomed: set[str]) -> list[str]:
        """The last transaction: rewrite, unlink the ids, fix the run's index
        entry, drop the run's references to values it no longer uses (the
        values themselves go after, see ``_drop_values``); returns those."""
        run_id = self.run_id
        lock_run(cur, run_id)
        for seq, (old, encoded, ids, size) in list(self.rewrites.items()):
            cur.execute(
                "SELECT data, ids, size FROM stepgraph_segments WHERE seq = %s FOR UPDATE", (seq,)
            )
            now = cur.fetchone()
            if now is None:
                continue  # deleted meanwhile
            data, held, held_size = now
            if bytes(data) != old:  # changed meanwhile (another deletion): redo it
                self.rewrite(seq, bytes(data), doomed)
                _, encoded, ids, size = self.rewrites[seq]
            cur.execute(
                "UPDATE stepgraph_segments SET data = %s, ids = %s, size = %s WHERE seq = %s",
                (encoded, ids, size, seq),
            )
            cur.execute(
                "UPDATE stepgraph_runs SET checkpoints = checkpoints - %s, size = size - %s "
                "WHERE run_id = %s",
                (len(held.split(",")) - len(ids.split(",")), held_size - size, run_id),
            )
        cur.execute("DELETE FROM stepgraph_checkpoint_ids WHERE id = ANY(%s)", (sorted(doomed),))
        cur.execute(
            "SELECT seq, data FROM stepgraph_segments WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
            (run_id,),
        )
        latest = cur.fetchone()
        if latest is None:  # nothing left of the run
            return forget_run(cur, run_id)
        cur.execute("SELECT last_checkpoint FROM stepgraph_runs WHERE run_id = %s", (run_id,))
        current = cur.fetchone()
        if current is not None and current[0] in doomed:  # an earlier one is latest now
            last = Segment(bytes(latest[1])).last()
            cur.execute(
                "UPDATE stepgraph_runs SET last_checkpoint = %s, superstep = %s, "
                "pending_requests = %s, status = %s, error = NULL WHERE run_id = %s",
                (last.id, last.superstep, last.pending_requests, last.status, run_id),
            )
        if self.refs is None:
            return []
        cur.execute(  # written while this plan was made
            "SELECT data FROM stepgraph_segments WHERE run_id = %s AND seq > %s",
            (run_id, self.upto),
        )
        for (data,) in cur.fetchall():
            self.note(bytes(data))
        if self.refs is None:
            return []
        cur.execute(
            "DELETE FROM stepgraph_run_blobs WHERE run_id = %s AND NOT hash = ANY(%s) "
            "RETURNING hash",
            (run_id, sorted(self.refs)),
        )
        return [h for (h,) in cur.fetchall()]
