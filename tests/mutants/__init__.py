"""Planted-bug cores and `make mutants` (python -m tests.mutants)."""
