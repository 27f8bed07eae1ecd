"""Warm actors: a run's actors, once it ends, wait for the next run of the
same workflow instead of being killed — a run then pays a call to each
actor it reuses rather than a process start.

Actors are kept per executor node (a workflow's nodes are its own: runs of
different workflows never share an actor), at most ``cap`` of them per node
(concurrent runs each take one; those given back beyond the cap are killed,
the oldest first), idle at most ``ttl`` seconds (a timer thread kills the
expired ones), and all killed by ``close()`` or when their workflow is
garbage-collected. An actor whose handler was still
running when its run ended is never kept.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from .._core import Node

__all__ = ["Idle", "WarmPool"]


class Idle:
    """An idle actor: its handle, its Ray node, since when it waits."""

    __slots__ = ("actor", "since", "where")

    def __init__(self, actor: Any, where: str) -> None:
        self.actor = actor
        self.where = where
        self.since = time.monotonic()


class WarmPool:
    """Idle actors by executor node (see the module doc); thread-safe."""

    def __init__(self, kill: Any, ttl: float, cap: int) -> None:
        self._kill = kill  # kill(actor): ray.kill without restart
        self.ttl = ttl
        self.cap = cap
        # Reentrant: a finalizer may run (in a garbage collection) on a
        # thread that holds it.
        self._lock = threading.RLock()
        self._idle: dict[int, list[Idle]] = {}  # id(node) -> idle actors
        self._watch: dict[int, weakref.finalize[Any, Node]] = {}
        self._timer: threading.Timer | None = None

    def take(self, node: Node) -> Idle | None:
        with self._lock:
            waiting = self._idle.get(id(node))
            return waiting.pop() if waiting else None

    def give(self, node: Node, actor: Any, where: str) -> None:
        """Keep ``actor`` warm for ``node``'s next run; beyond ``cap`` idle
        actors of that node, the oldest is killed."""
        key = id(node)
        with self._lock:
            waiting = self._idle.setdefault(key, [])
            waiting.append(Idle(actor, where))
            surplus = waiting[: max(0, len(waiting) - self.cap)]
            del waiting[: len(surplus)]
            if not waiting:
                del self._idle[key]
            elif key not in self._watch:  # its workflow gone, its actors go
                self._watch[key] = weakref.finalize(node, self._forget, key)
            if self._idle and self._timer is None:
                self._schedule(self.ttl)
        for idle in surplus:
            self._kill(idle.actor)

    def forget(self, node: Node) -> None:
        """Kill the node's idle actors (they are not to be trusted)."""
        self._forget(id(node))

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    def _forget(self, key: int) -> None:
        with self._lock:
            gone = self._idle.pop(key, [])
            self._watch.pop(key, None)
        if gone:  # killed off the collecting thread, which may be anywhere in Ray
            threading.Thread(target=self._kill_all, args=(gone,), daemon=True).start()

    def _kill_all(self, gone: list[Idle]) -> None:
        for idle in gone:
            self._kill(idle.actor)

    def _schedule(self, delay: float) -> None:
        self._timer = threading.Timer(delay, self._sweep)
        self._timer.daemon = True
        self._timer.start()

    def _sweep(self) -> None:
        now = time.monotonic()
        expired: list[Idle] = []
        with self._lock:
            self._timer = None
            for key, waiting in list(self._idle.items()):
                keep = [i for i in waiting if now - i.since < self.ttl]
                expired += [i for i in waiting if now - i.since >= self.ttl]
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
            if self._idle:  # next: when the oldest left expires
                oldest = min(i.since for v in self._idle.values() for i in v)
                self._schedule(max(0.05, oldest + self.ttl - now))
        for idle in expired:
            self._kill(idle.actor)

    def close(self) -> None:
        """Kill every idle actor and stop the timer."""
        with self._lock:
            gone = [i for v in self._idle.values() for i in v]
            self._idle.clear()
            for watch in self._watch.values():
                watch.detach()
            self._watch.clear()
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        for idle in gone:
            self._kill(idle.actor)
