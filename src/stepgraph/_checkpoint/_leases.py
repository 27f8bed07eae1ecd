"""Who holds a run: lease holders that name their process, so a lease of a
process that has ended is known to be free (no timer decides it).

A holder is ``host:pid:start:token``: the machine, the process id, the
process's start time (so a process id the system gave again later is not
taken for the old process) and a token for the one run call.
"""

from __future__ import annotations

import os
import socket
import uuid

__all__ = ["alive", "deleting", "holding", "new_holder", "this_process"]

_HOST = socket.gethostname().replace(":", "_")


def _start_time(pid: int) -> str:
    """When the process started, in clock ticks since boot (Linux); ``"-"``
    where the system does not say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return "-"
    # The command name (field 2) may hold spaces and parentheses: count the
    # fields after its closing parenthesis; the start time is field 22.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else "-"


_ME = f"{_HOST}:{os.getpid()}:{_start_time(os.getpid())}"


def new_holder(*, deleting: bool = False) -> str:
    """A holder for one run call of this process (or one deletion)."""
    return f"{_ME}:{'deleting-' if deleting else ''}{uuid.uuid4().hex[:12]}"


def this_process() -> str:
    """A holder naming this process alone (for a session holding the
    leases of several of its runs)."""
    return f"{_ME}:runs"


def deleting(holder: str) -> bool:
    """Whether the holder holds the run to delete it."""
    return holder.rpartition(":")[2].startswith("deleting-")


def alive(holder: str) -> bool:
    """Whether the holder's process may still be running. A process on
    another machine cannot be checked here: it counts as alive."""
    try:
        host, pid_text, started, _ = holder.split(":")
        pid = int(pid_text)
    except ValueError:
        return False  # not a holder this module wrote
    if host != _HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if _ended(pid):
        return False
    return started == "-" or _start_time(pid) in (started, "-")


def _ended(pid: int) -> bool:
    """Whether the process has ended though its parent has not collected it
    yet (a zombie: killed, its exit status unread — for as long as its
    parent, a container's first process say, takes). Such a process holds
    nothing: its sockets and files are closed. (Linux; elsewhere ``False``.)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return False
    fields = stat[stat.rindex(b")") + 2 :].split()  # (field 3, the state, first)
    return bool(fields) and fields[0] in (b"Z", b"X")


def holding(holder: str) -> str:
    """Who a holder is, for messages: ``process PID on HOST``, or another
    call of this process."""
    if holder.startswith(_ME + ":"):
        return f"another call in this process, {os.getpid()} on {_HOST}"
    host, pid, *_ = [*holder.split(":"), "", ""]
    return f"process {pid} on {host}" if pid else repr(holder)
