"""Benchmarks of Encore; the figures are reported in BENCHMARKS.md."""
