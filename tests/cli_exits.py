"""A module that calls sys.exit on import, as a script would (for the CLI's
error tests): its exit code must not pass for the run's."""

import sys

sys.exit(3)
