"""`celery-exporter check`: verify the broker, the exporter, Prometheus, Alertmanager, Grafana."""
