"""Token usage: what model calls cost, summed per executor for a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["RunUsage", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one or more model calls used. ``cached_tokens`` (of the
    prompt) and ``reasoning_tokens`` (of the completion) are parts of the
    first two, counted where the server reports them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def __bool__(self) -> bool:
        return any(self.as_dict().values())

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


@dataclass(frozen=True, slots=True)
class RunUsage:
    """A run's token usage: ``by_executor`` keyed by executor path
    (``"outer/inner/agent"`` inside sub-workflows), and their ``total``."""

    by_executor: Mapping[str, Usage] = field(default_factory=dict)

    @property
    def total(self) -> Usage:
        total = Usage()
        for usage in self.by_executor.values():
            total = total + usage
        return total
