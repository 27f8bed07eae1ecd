"""Switch cases: ``add_switch(src, [Case(predicate, dst), ..., Default(dst)])``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._executor import Executor

__all__ = ["Case", "Default"]


@dataclass(frozen=True, slots=True)
class Case:
    """Route to ``target`` when ``predicate(message)`` (sync or async) is true.
    Cases are tried in order; the first true one wins. A raising predicate
    fails the run."""

    predicate: Callable[[Any], bool | Awaitable[bool]]
    target: Executor | str


@dataclass(frozen=True, slots=True)
class Default:
    """Route to ``target`` when no case matched."""

    target: Executor | str
