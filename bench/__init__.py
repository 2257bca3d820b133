"""Benchmarks for dproxy (see bench/README.md)."""
