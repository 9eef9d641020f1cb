"""The benchmark suite: ``python -m bench`` (make bench, make bench-quick)."""
