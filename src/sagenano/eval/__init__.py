"""Evaluation: held-out synthetic tasks (and, later, the paper's benchmarks)."""
