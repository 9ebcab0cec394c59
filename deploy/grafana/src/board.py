"""The frame every Celery dashboard shares: variables, links, refresh; and the JSON it writes.

`celery_dashboard` returns an SDK dashboard builder with the datasource/job/queue/task/worker
variables (every query variable chained from `job`), and the dropdown of links to the other
Celery dashboards. `render` numbers the panels and serialises the dashboard the way it is
committed under deploy/grafana/dashboards.
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dashboard_models
from panels import DATASOURCE

TAGS = ["celery", "celery-exporter"]

# name -> (label, description, label_values() query). Each filters the panels' selectors.
VARIABLES = {
    "job": (
        "Job",
        "Prometheus jobs that scrape a celery-exporter.",
        "label_values(celery_exporter_build_info, job)",
    ),
    "queue": (
        "Queue",
        "Celery queues (queue_name).",
        'label_values(celery_queue_length{job=~"$job"}, queue_name)',
    ),
    "task": (
        "Task",
        "Celery task names.",
        'label_values(celery_task_received_total{job=~"$job"}, name)',
    ),
    "worker": (
        "Worker",
        "Celery worker node names (name@host).",
        'label_values(celery_worker_up{job=~"$job"}, worker)',
    ),
}
HIDDEN_NOTE = " Hidden here; kept so that links between the Celery dashboards keep the selection."


def _query_variable(name: str, hidden: bool) -> dashboard_builders.QueryVariable:
    label, description, query = VARIABLES[name]
    return (
        dashboard_builders.QueryVariable(name)
        .label(label)
        .description(description + (HIDDEN_NOTE if hidden else ""))
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .current(dashboard_models.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .hide(
            dashboard_models.VariableHide.HIDE_VARIABLE
            if hidden
            else dashboard_models.VariableHide.DONT_HIDE
        )
    )


def celery_dashboard(
    uid: str, title: str, description: str, hidden: tuple[str, ...] = ()
) -> dashboard_builders.Dashboard:
    """A dashboard titled `Celery / <title>` with every variable (those in `hidden` hidden).

    `uid` must never change: alert annotations in deploy/alert_rules.yml link to /d/<uid>.
    """
    board = (
        dashboard_builders.Dashboard(f"Celery / {title}")
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .timezone("")
        .refresh("30s")
        .version(1)
        .link(
            dashboard_builders.DashboardLink("Celery dashboards")
            .type(dashboard_models.DashboardLinkType.DASHBOARDS)
            .tags(["celery"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
            .icon("external link")
        )
        .annotation(
            dashboard_builders.AnnotationQuery()
            .name("Annotations & Alerts")
            .built_in(1)
            .datasource(dashboard_models.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
        .with_variable(
            dashboard_builders.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .hide(dashboard_models.VariableHide.DONT_HIDE)
        )
    )
    for name in VARIABLES:
        board.with_variable(_query_variable(name, name in hidden))
    return board


def render(board: dashboard_builders.Dashboard) -> str:
    """The dashboard's JSON as committed: panels numbered 1.. in order, keys sorted."""
    model = board.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
