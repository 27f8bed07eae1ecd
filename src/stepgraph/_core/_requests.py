"""Human-in-the-loop requests as the kernel sees them.

``ctx.request_info(request, ResponseType)`` opens a :class:`PendingRequest`;
it becomes part of the run's open set at the barrier. A later run that answers
it delivers a :class:`Response` to the requesting executor's inbox, where the
executor dispatches it to its ``@response_handler``.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

__all__ = ["PendingRequest", "RequestId", "Response", "id_separators"]


class RequestId(str):
    """The id of the request ``ctx.request_info`` opened: a ``str``, and an
    awaitable already complete with that id — ``await`` it in async handlers,
    use it plainly in sync ones."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, str]:
        yield from ()
        return str(self)

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return str, (str(self),)  # copied (into the state, say): a plain str


def id_separators(text: str) -> bool:
    """Whether ``text`` holds whitespace, ``=`` or a control character
    (NUL...), which a request id may not: answers are given as
    ``ID=VALUE``, typed in a terminal, and stored as text (PostgreSQL's
    holds no NUL)."""
    return "=" in text or any(c.isspace() or (not c.isprintable() and c < "\xa0") for c in text)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRequest:
    """An open request: who asked, what, and which response type it expects."""

    request_id: str
    executor_id: str
    request: Any
    response_type: Any
    superstep: int


@dataclass(frozen=True, slots=True)
class Response:
    """An answer on its way to the executor that asked."""

    request: PendingRequest
    value: Any
