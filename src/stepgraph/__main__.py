"""``python -m stepgraph`` is the ``stepgraph`` command."""

import sys

from ._cli import main

sys.exit(main())
