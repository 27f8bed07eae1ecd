"""Approving tool calls: the request an agent opens and the answer it takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

__all__ = ["ToolApproval", "ToolApprovalRequest"]


@dataclass(frozen=True, slots=True)
class ToolApprovalRequest:
    """An agent's model wants to call ``tool`` with ``arguments`` (as the
    model wrote them, parsed). The request's id is the call's id."""

    agent: str
    tool: str
    arguments: dict[str, Any]
    call_id: str


@dataclass(frozen=True, slots=True)
class ToolApproval:
    """The answer to a :class:`ToolApprovalRequest`: ``approve()``,
    ``reject(reason)`` (the model is told the reason; the tool never runs)
    or ``edit(arguments)`` (the tool runs with these arguments instead).
    From the command line: ``--respond ID='{"decision": "approve"}'``."""

    decision: Literal["approve", "reject", "edit"]
    reason: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)

    # An answer with a field it does not know is refused, not half-read.
    __pydantic_config__: ClassVar[Any] = {"extra": "forbid"}

    @classmethod
    def approve(cls) -> ToolApproval:
        return cls("approve")

    @classmethod
    def reject(cls, reason: str = "rejected by the reviewer") -> ToolApproval:
        return cls("reject", reason)

    @classmethod
    def edit(cls, arguments: Mapping[str, Any]) -> ToolApproval:
        if not isinstance(arguments, Mapping):
            raise TypeError(
                f"ToolApproval.edit takes the tool's arguments as a mapping of name to value, "
                f"not {type(arguments).__name__}"
            )
        return cls("edit", None, dict(arguments))
