"""Operator commands run by hand: `celery-exporter check` and `celery-exporter report`.

Nothing here runs inside the exporter process, and the daemon never imports this package
(tests/tools/test_layout.py proves it). These modules are HTTP and Prometheus clients.
"""
