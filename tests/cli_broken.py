"""A module that fails on import (for the CLI's error tests)."""

raise RuntimeError("this module is broken on purpose")
