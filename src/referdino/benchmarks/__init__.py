"""Reproducible experiments: `python -m referdino.benchmarks.synthetic --out DIR` (the learning proof)."""
