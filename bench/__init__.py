"""Benchmark and load tools for celery-exporter: a synthetic Celery event stream, a baseline
consumer, the benchmark runner and a soak test. Importable so the unit tests can reach the pure
parts of the load generator."""
