"""Benchmarks: each module with a ``main(argv)`` prints a table (``python -m bench.<name> [--quick]``)."""
