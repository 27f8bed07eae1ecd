"""A module that takes long to import (for the CLI's Ctrl-C tests): it says
when it has started, then sleeps."""

import sys
import time

print("importing", file=sys.stderr, flush=True)
time.sleep(60)
