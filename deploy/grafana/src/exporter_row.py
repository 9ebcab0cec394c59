"""The Overview dashboard's last row: the exporter's own health, one exporter process at a time.

Unlike every other panel, these read min/max over the replicas of an HA pair instead of
deduplicating them, so that one replica in trouble shows.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard
from panels import RED_BELOW_1, row, stat, target, timeseries, up_down
from queries import aggregate, increase, rate, select


def with_exporter_row(board: Dashboard) -> Dashboard:
    """`board` with the Exporter row added at the end."""
    return (
        board.with_row(row("Exporter"))
        .with_panel(
            stat(
                "Exporter scraped",
                "Whether Prometheus reaches the exporter (the up series of its job).",
                target(aggregate("min", select("up")), "up"),
                steps=RED_BELOW_1,
                mappings=up_down("DOWN", "UP"),
            )
        )
        .with_panel(
            stat(
                "Queue poll",
                "Whether the last broker queue-length poll succeeded.",
                target(aggregate("min", select("celery_exporter_queue_poll_success")), "poll"),
                steps=RED_BELOW_1,
                mappings=up_down("FAILING", "OK"),
            )
        )
        .with_panel(
            stat(
                "Last event",
                "Seconds since the exporter received the last Celery event.",
                target(
                    "time() - "
                    + aggregate("max", select("celery_exporter_last_event_timestamp_seconds")),
                    "age",
                ),
                unit="s",
                steps=[("green", None), ("orange", 60), ("red", 300)],
            )
        )
        .with_panel(
            stat(
                "Skipped events /s",
                "Events or messages the exporter could not use, per second.",
                target(
                    aggregate("sum", rate("celery_exporter_event_errors_total")) + " or vector(0)",
                    "skipped /s",
                ),
                unit="reqps",
                steps=[("green", None), ("orange", 0.001)],
            )
        )
        .with_panel(
            stat(
                "Broker reconnects",
                "Times the event consumer reconnected to the broker during the dashboard's time"
                " range.",
                target(
                    aggregate(
                        "sum",
                        increase("celery_exporter_broker_reconnects_total", window="$__range"),
                    ),
                    "reconnects",
                ),
                steps=[("green", None), ("orange", 1)],
                decimals=0,
            )
        )
        .with_panel(
            stat(
                "Queue poll duration",
                "Seconds the last broker queue-length poll took.",
                target(
                    aggregate("max", select("celery_exporter_queue_poll_duration_seconds")), "poll"
                ),
                unit="s",
                steps=[("green", None), ("orange", 1), ("red", 3)],
            )
        )
        .with_panel(
            timeseries(
                "Events received /s",
                "Celery events the exporter received, by type.",
                target(
                    aggregate("sum", rate("celery_exporter_events_total"), ("event",)), "{{event}}"
                ),
                unit="reqps",
                width=24,
            )
        )
    )
