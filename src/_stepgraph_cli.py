"""The ``stepgraph`` console script's entry point, outside the package.

A console script imports its target's package before calling it, and
``stepgraph`` takes a few tenths of a second to import: a Ctrl-C then
printed a ``KeyboardInterrupt`` traceback from deep in an import. This
module imports nothing of stepgraph's until ``main`` runs, so a Ctrl-C while
the package loads stops the command as one at any other moment does.
(``python -m stepgraph`` imports the package first, as Python does for any
package it runs.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Load the command line, then run it (``stepgraph._cli.main``)."""
    try:
        from stepgraph._cli import main as command
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    return command(argv)
