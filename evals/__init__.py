"""Batch evaluation and benchmarks for RelayGen."""
