"""Benchmark metrics and evaluators."""
