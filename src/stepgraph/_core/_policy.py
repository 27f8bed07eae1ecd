"""Per-executor run policies."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Placement", "RetryPolicy"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Re-invoke a failing handler call with the same message.

    Whatever a failed attempt sent, yielded or wrote is discarded before the
    next attempt. Attempt ``n`` (1-based) that fails waits
    ``min(backoff * multiplier ** (n - 1), max_backoff)`` seconds before the
    next one. Only exceptions that are instances of ``retry_on`` (an
    exception class, or a tuple or list of them) are retried;
    a timeout (``ExecutorTimeoutError``) counts like any other failure.

    >>> RetryPolicy(attempts=3, backoff=0.1)
    """

    attempts: int = 3
    backoff: float = 0.0
    multiplier: float = 2.0
    max_backoff: float = 30.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        attempts = self.attempts
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be an int >= 1, got {attempts!r}")
        numbers = (self.backoff, self.multiplier, self.max_backoff)
        if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
            raise ValueError(
                "RetryPolicy.backoff, multiplier and max_backoff must be numbers, got "
                f"{self.backoff!r}, {self.multiplier!r}, {self.max_backoff!r}"
            )
        if not (self.backoff >= 0 and self.max_backoff >= 0 and self.multiplier >= 1):
            raise ValueError("RetryPolicy needs backoff >= 0, max_backoff >= 0, multiplier >= 1")
        retry_on: object = self.retry_on
        # One class, or a list of them, as an ``except`` clause would take it
        # (kept as given, a list made ``should_retry`` raise TypeError at the
        # first failure, hiding the handler's own error).
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
        elif isinstance(retry_on, (list, set, frozenset)):
            retry_on = tuple(retry_on)
        if (
            not isinstance(retry_on, tuple)
            or not retry_on
            or not all(isinstance(t, type) and issubclass(t, Exception) for t in retry_on)
        ):
            raise ValueError(
                "RetryPolicy.retry_on must be an Exception type or a non-empty tuple of them, "
                f"got {self.retry_on!r}"
            )
        object.__setattr__(self, "retry_on", retry_on)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``."""
        return min(self.backoff * self.multiplier ** (attempt - 1), self.max_backoff)

    def should_retry(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry_on)


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """Where a distributed backend may run an executor: CPUs, GPUs, custom
    resources (e.g. ``{"gpu_node": 1}``) and a runtime environment. The local
    backend ignores it."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: dict[str, float] | None = None
    runtime_env: dict[str, object] | None = None

    def merged(self, other: Placement | None) -> Placement:
        """These settings, with ``other``'s filled in where these are unset."""
        if other is None:
            return self
        return Placement(
            num_cpus=self.num_cpus if self.num_cpus is not None else other.num_cpus,
            num_gpus=self.num_gpus if self.num_gpus is not None else other.num_gpus,
            resources=self.resources if self.resources is not None else other.resources,
            runtime_env=self.runtime_env if self.runtime_env is not None else other.runtime_env,
        )
