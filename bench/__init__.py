"""Benchmarks: ``make bench`` (``python -m bench``). Each prints its figures."""
