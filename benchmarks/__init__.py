"""Benchmarks that print numbers: `python -m benchmarks.<name>` (see README.md)."""
