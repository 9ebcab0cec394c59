"""Names the shipped monitoring files define, which `check` expects to find deployed.

One constant list instead of reading deploy/ at run time: an installed package has no deploy/
directory. tests/tools/test_shipped.py keeps these lists equal to the files in deploy/.
"""

from __future__ import annotations

# deploy/alert_rules.yml: the rule groups Prometheus must have loaded.
RULE_GROUPS = ("celery.thresholds", "celery.recording", "celery.alerts")
# deploy/grafana/dashboards/*.json: the uid of each shipped dashboard (kept stable on purpose).
DASHBOARD_UIDS = ("celery-overview", "celery-tasks", "celery-workers")
# deploy/grafana/provisioning/datasources/prometheus.yml: the data source the dashboards use.
DATASOURCE_UID = "prometheus"
# deploy/prometheus.yml: the scrape job the shipped alerts select (up{job="celery-exporter"}).
EXPORTER_JOB = "celery-exporter"
# Severities the shipped alerts carry; used when Prometheus cannot tell us which are loaded.
SEVERITIES = ("critical", "warning")
