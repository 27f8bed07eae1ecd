"""The ``stepgraph`` command line (typer + rich)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepgraph`` console script."""
    from ._app import app

    try:
        app(
            args=list(argv) if argv is not None else None,
            prog_name="stepgraph",
            standalone_mode=True,
        )
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
