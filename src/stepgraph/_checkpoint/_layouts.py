"""What the stores share in checking and migrating their layouts: the
refusals, worded alike, and the stepping from one layout to the next (each
store's steps run inside its own migration transaction)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from .._exceptions import CheckpointError

__all__ = ["NOTHING_TO_MIGRATE", "older", "newer", "step_up"]

T = TypeVar("T")

# What a migration of a store without any table says (nothing was changed).
NOTHING_TO_MIGRATE = (
    "nothing to migrate; the first run with this store creates its tables (nothing was created)"
)


def older(where: str, layout: int, current: int) -> CheckpointError:
    return CheckpointError(
        f"{where} has layout {layout}, written by an earlier stepgraph; this version reads "
        f"layout {current}: bring it up to date with `stepgraph checkpoints migrate` (nothing "
        "was changed)"
    )


def newer(where: str, layout: int, current: int) -> CheckpointError:
    return CheckpointError(
        f"{where} has layout {layout}, written by a newer stepgraph; this version reads "
        f"layout {current} (nothing was changed)"
    )


def step_up(
    where: str, layout: int, current: int, steps: Mapping[int, Callable[[T], None]], target: T
) -> int:
    """Run the steps from ``layout`` up to ``current`` on ``target``; the
    layout reached. A layout no step starts from (but the current one) is
    refused before anything changes."""
    if layout != current and layout not in steps:
        raise CheckpointError(
            f"{where} has layout {layout}, which this version of stepgraph cannot bring "
            f"to layout {current}" + (" (it is newer)" if layout > current else "")
        )
    while layout in steps:
        steps[layout](target)
        layout += 1
    return layout
