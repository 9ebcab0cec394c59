"""`celery-exporter report`: task performance over a time range, from Prometheus."""
