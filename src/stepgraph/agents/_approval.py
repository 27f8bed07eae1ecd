"""Approving tool calls: the request an agent opens and the answer it takes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pydantic_core

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

    def __post_init__(self) -> None:
        # Anything but the three decisions would fall through to "run the
        # tool": a typo ("approved", "deny") must not approve a gated call.
        if self.decision not in ("approve", "reject", "edit"):
            raise ValueError(
                f"ToolApproval decision must be 'approve', 'reject' or 'edit', not "
                f"{self.decision!r}"
            )
        if not isinstance(self.arguments, Mapping):
            raise TypeError(
                f"ToolApproval: arguments are the tool's arguments as a mapping of name to "
                f"value, not {type(self.arguments).__name__}"
            )
        if self.arguments and self.decision != "edit":
            raise ValueError(
                f"ToolApproval: arguments are read only with decision 'edit'; with "
                f"{self.decision!r} they would be ignored"
            )
        # An edit holds JSON values, as the model's arguments do: a model
        # instance, a dataclass or a date given for an argument is written as
        # pydantic writes it, so the answer's check, its checkpoint and the
        # call all read the same plain arguments.
        plain: dict[str, Any] = {}
        for name, value in self.arguments.items():
            try:
                plain[str(name)] = pydantic_core.to_jsonable_python(value)
            except pydantic_core.PydanticSerializationError as exc:
                raise ValueError(
                    f"ToolApproval: the edited argument {name!r} is not a JSON value "
                    f"(a number, text, list, object, or a model, dataclass or date): {exc}"
                ) from None
        object.__setattr__(self, "arguments", plain)

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
