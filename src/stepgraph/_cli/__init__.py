"""The ``stepgraph`` command line (typer + rich)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stepgraph`` console script. A problem nobody
    foresaw is still one line (``STEPGRAPH_TRACEBACK=1`` shows where)."""
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
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("STEPGRAPH_TRACEBACK"):
            traceback.print_exc()
        print(
            f"error: {type(exc).__name__}: {exc} (an unexpected failure; set "
            "STEPGRAPH_TRACEBACK=1 to see where, and please report it)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
