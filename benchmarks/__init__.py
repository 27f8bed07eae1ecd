"""Side-by-side benchmarks: ``python -m benchmarks`` (``--quick`` for a smoke run)."""
