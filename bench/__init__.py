"""Benchmarks: our module against raw RQ in the same run (python -m bench.run)."""
