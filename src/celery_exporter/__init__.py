"""celery-exporter: a Prometheus exporter for Celery."""

__version__ = "0.1.0"
