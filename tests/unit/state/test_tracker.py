"""Scripted event sequences through the tracker, with a fake clock; exact metric values."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import generate_latest

from celery_exporter.state.event_fields import OVERFLOW, UNKNOWN
from tests.support.eventscript import (
    PRODUCER,
    WORKER,
    Harness,
    failed,
    heartbeat,
    received,
    retried,
    sent,
    started,
    succeeded,
)

T0 = 1_700_000_000.0


def lifecycle(
    h: Harness,
    uuid: str,
    name: str = "app.add",
    queue: str = "celery",
    t: float = T0,
    runtime: float = 0.3,
) -> None:
    h.feed(
        sent(uuid, name, t, queue=queue),
        received(uuid, name, t + 0.1),
        started(uuid, t + 0.5),
        succeeded(uuid, t + 0.8, runtime=runtime),
    )


def test_lifecycle_counts_every_event_and_observes_runtime_and_queue_wait() -> None:
    h = Harness()
    lifecycle(h, "u1")
    lifecycle(h, "u2", runtime=2.0)
    assert h.task("sent", "app.add", hostname="web-1") == 2
    for kind in ("received", "started", "succeeded"):
        assert h.task(kind, "app.add") == 2
    labels = {"name": "app.add", "hostname": "worker-1", "queue_name": "celery"}
    assert h.value("celery_task_runtime_count", **labels) == 2
    assert h.value("celery_task_runtime_sum", **labels) == pytest.approx(2.3)
    assert h.value("celery_task_runtime_bucket", le="0.5", **labels) == 1
    assert h.value("celery_task_runtime_bucket", le="2.5", **labels) == 2
    assert h.value("celery_task_queue_wait_time_count", **labels) == 2
    assert h.value("celery_task_queue_wait_time_sum", **labels) == pytest.approx(1.0)
    assert h.value("celery_exporter_events_total", event="task-sent") == 2
    assert h.value("celery_exporter_tracked_tasks") == 0  # finished tasks leave the table


def test_worker_counters_are_zero_initialised_for_worker_hosts_only() -> None:
    h = Harness()
    h.feed(sent("u1", "app.add", T0), received("u1", "app.add", T0 + 0.1))
    assert h.task("received", "app.add") == 1
    for kind in ("started", "succeeded", "retried", "rejected", "revoked"):
        assert h.task(kind, "app.add") == 0
    # The producer's host labels task-sent only, never a worker-side counter.
    assert h.task("sent", "app.add", hostname="web-1") == 1
    for kind in ("received", "started", "succeeded"):
        assert h.task(kind, "app.add", hostname="web-1") is None


def test_failed_task_gets_exception_class_and_runtime_from_worker_clock() -> None:
    h = Harness()
    h.feed(
        received("u1", "app.fail", T0),
        started("u1", T0 + 1.0),
        failed("u1", T0 + 3.5, exception="ValueError('boom')"),
        received("u2", "app.fail", T0),
        failed("u2", T0 + 1, exception="mymod.CustomError: bad"),
        received("u3", "app.fail", T0),
        failed("u3", T0 + 1, exception=None),  # type: ignore[arg-type]
    )
    assert h.task("failed", "app.fail", exception="ValueError") == 1
    assert h.task("failed", "app.fail", exception="mymod.CustomError") == 1
    assert h.task("failed", "app.fail", exception=UNKNOWN) == 1
    labels = {"name": "app.fail", "hostname": "worker-1", "queue_name": "celery"}
    # Only u1 was seen starting, so only it has a failed runtime.
    assert h.value("celery_task_failed_runtime_seconds_count", **labels) == 1
    assert h.value("celery_task_failed_runtime_seconds_sum", **labels) == pytest.approx(2.5)


def test_unknown_uuid_is_counted_under_the_placeholder_name() -> None:
    h = Harness()
    h.feed(started("ghost", T0), succeeded("ghost", T0 + 1, runtime=1.0))
    assert h.task("started", UNKNOWN) == 1
    assert h.task("succeeded", UNKNOWN) == 1


def test_batched_event_lists_are_unpacked_and_junk_in_them_is_counted() -> None:
    h = Harness()
    h.feed([received("u1", "app.add", T0), "junk", started("u1", T0 + 1), 42, None])
    assert h.task("received", "app.add") == 1
    assert h.task("started", "app.add") == 1
    assert h.value("celery_exporter_event_errors_total", reason="not_a_dict") == 3


def test_sent_arriving_after_the_worker_events_is_counted_with_its_wait() -> None:
    h = Harness()
    h.feed(
        received("u1", "app.add", T0 + 0.1),
        started("u1", T0 + 0.2),
        succeeded("u1", T0 + 0.3),
        sent("u1", "app.add", T0, queue="celery"),  # the producer's connection was slower
    )
    assert h.task("sent", "app.add", hostname="web-1") == 1
    assert h.task("succeeded", "app.add") == 1
    labels = {"name": "app.add", "hostname": "worker-1", "queue_name": "celery"}
    assert h.value("celery_task_queue_wait_time_count", **labels) == 1
    assert h.value("celery_task_queue_wait_time_sum", **labels) == pytest.approx(0.2)
    assert h.value("celery_exporter_tracked_tasks") == 0  # the late send left no record


def test_retry_with_eta_does_not_count_the_countdown_as_waiting() -> None:
    h = Harness()
    eta = "2023-11-14T22:13:31+00:00"  # T0 + 11 s
    h.feed(
        sent("u1", "app.flaky", T0),
        received("u1", "app.flaky", T0 + 0.1),
        started("u1", T0 + 1.0),
        retried("u1", T0 + 1.05),
        sent("u1", "app.flaky", T0 + 1.1, eta=eta),
        received("u1", "app.flaky", T0 + 1.2),
        started("u1", T0 + 11.5),
        succeeded("u1", T0 + 12.0, runtime=0.5),
    )
    assert h.task("retried", "app.flaky") == 1
    assert h.task("started", "app.flaky") == 2
    labels = {"name": "app.flaky", "hostname": "worker-1", "queue_name": "celery"}
    assert h.value("celery_task_queue_wait_time_count", **labels) == 2
    # 1.0 s before the first start, 0.5 s after the ETA; not the 10 s countdown.
    assert h.value("celery_task_queue_wait_time_sum", **labels) == pytest.approx(1.5)


def test_time_zone_offsets_do_not_shift_durations() -> None:
    h = Harness()
    producer_event = sent("u1", "app.add", T0)
    producer_event["utcoffset"] = 5  # producer in UTC-5
    worker_event = started("u1", T0 + 2.0)
    worker_event["utcoffset"] = -3  # worker in UTC+3
    h.feed(producer_event, received("u1", "app.add", T0 + 1), worker_event)
    labels = {"name": "app.add", "hostname": "worker-1", "queue_name": "celery"}
    assert h.value("celery_task_queue_wait_time_sum", **labels) == pytest.approx(2.0)


def test_clock_skew_between_hosts_is_clamped_to_zero_wait() -> None:
    h = Harness()
    h.feed(sent("u1", "app.add", T0 + 5), received("u1", "app.add", T0), started("u1", T0 + 1))
    labels = {"name": "app.add", "hostname": "worker-1", "queue_name": "celery"}
    assert h.value("celery_task_queue_wait_time_sum", **labels) == 0
    assert h.value("celery_task_queue_wait_time_bucket", le="0.05", **labels) == 1


def test_worker_goes_down_after_the_timeout_and_is_purged_later() -> None:
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=3600)
    h.feed(heartbeat(WORKER, T0, active=3, processed=10), received("u1", "app.add", T0))
    up = {"hostname": "worker-1", "worker": WORKER}
    assert h.value("celery_worker_up", **up) == 1
    assert h.value("celery_worker_tasks_active", **up) == 3
    assert h.value("celery_worker_last_heartbeat_timestamp_seconds", **up) == h.clock.now
    assert h.value("celery_worker_loadavg", period="5m", **up) == 0.25
    h.clock.advance(60)
    assert h.value("celery_worker_up", **up) == 1
    h.clock.advance(1)  # SIGKILL sends no worker-offline: only the clock says it is gone
    assert h.value("celery_worker_up", **up) == 0
    assert h.value("celery_worker_tasks_active", **up) == 0
    h.clock.advance(15 * 60)  # long enough for an alert with for: 15m
    assert h.value("celery_worker_up", **up) == 0
    h.clock.advance(3600)
    assert h.value("celery_worker_up", **up) is None  # hidden at scrape time already
    assert h.task("received", "app.add") == 1
    h.tracker.expire()  # the event thread frees the memory, with the host's task series
    assert h.task("received", "app.add") is None


def test_two_workers_on_one_host_have_separate_series() -> None:
    h = Harness(worker_timeout=60)
    h.feed(heartbeat("a@host-1", T0), heartbeat("b@host-1", T0))
    h.clock.advance(50)
    h.feed(heartbeat("a@host-1", T0 + 50))  # b was killed
    h.clock.advance(30)
    assert h.value("celery_worker_up", hostname="host-1", worker="a@host-1") == 1
    assert h.value("celery_worker_up", hostname="host-1", worker="b@host-1") == 0


def test_clean_shutdown_drops_the_worker_gauges_at_once_and_its_task_series_at_the_purge() -> None:
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=600)
    h.feed(heartbeat(WORKER, T0, kind="worker-online"), received("u1", "app.add", T0))
    h.feed(heartbeat(WORKER, T0, kind="worker-offline"))
    up = {"hostname": "worker-1", "worker": WORKER}
    # Gone on purpose, not down: no `up 0` for CeleryWorkerDown to be pending on during deploys.
    assert h.value("celery_worker_up", **up) is None
    assert h.value("celery_worker_tasks_active", **up) is None
    assert h.task("received", "app.add") == 1  # counters stay (tests/unit/test_departed_workers)
    h.clock.advance(601)
    h.tracker.expire()
    assert h.task("received", "app.add") is None


def test_wakeup_heartbeat_without_counts_keeps_the_last_values() -> None:
    h = Harness()
    h.feed(heartbeat(WORKER, T0, active=4, processed=9))
    h.feed(heartbeat(WORKER, T0 + 1, active=None, processed=None))
    assert h.value("celery_worker_tasks_active", hostname="worker-1", worker=WORKER) == 4


def test_task_events_disabled_is_detected_and_warned_once(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    caplog.set_level(logging.WARNING)
    labels = {"hostname": "worker-1", "worker": WORKER}
    h.feed(heartbeat(WORKER, T0, processed=0))
    assert h.value("celery_worker_task_events_enabled", **labels) is None  # idle: unknown
    for step in range(1, 10):
        h.clock.advance(2)
        h.feed(heartbeat(WORKER, T0 + 2 * step, processed=5 * step))
    assert h.value("celery_worker_task_events_enabled", **labels) == 0
    warnings = [r for r in caplog.records if "sends no task events" in r.getMessage()]
    assert len(warnings) == 1
    assert WORKER in warnings[0].getMessage() and "-E" in warnings[0].getMessage()


def test_task_events_enabled_when_task_events_arrive() -> None:
    h = Harness()
    h.feed(heartbeat(WORKER, T0, processed=0), received("u1", "app.add", T0))
    for step in range(1, 10):
        h.clock.advance(2)
        h.feed(heartbeat(WORKER, T0 + 2 * step, processed=step))
    assert h.value("celery_worker_task_events_enabled", hostname="worker-1", worker=WORKER) == 1


def test_queue_resolution_without_task_sent_events() -> None:
    h = Harness(worker_queues={"celery@only-emails": ("emails",), WORKER: ("a", "b")})
    h.feed(received("u1", "app.mail", T0, hostname="celery@only-emails"))
    assert h.task("received", "app.mail", hostname="only-emails", queue="emails") == 1
    # A worker with two queues cannot tell; a queue this task name was sent to before can.
    h.feed(sent("u2", "app.report", T0, queue="reports"), received("u2", "app.report", T0))
    h.feed(received("u3", "app.report", T0))
    assert h.task("received", "app.report", queue="reports") == 2
    h.feed(received("u4", "app.other", T0))
    assert h.task("received", "app.other", queue="celery") == 1


def test_generic_hostname_flags() -> None:
    h = Harness(generic_hostname_task_sent_metric=True, generic_hostname_worker_task_metric=True)
    lifecycle(h, "u1")
    assert h.task("sent", "app.add", hostname="generic") == 1
    assert h.task("succeeded", "app.add", hostname="generic") == 1
    assert h.task("succeeded", "app.add", hostname="worker-1") is None


def test_task_name_cap_folds_the_rest_into_overflow() -> None:
    h = Harness(max_task_names=2)
    for i in range(5):
        h.feed(received(f"u{i}", f"app.t{i}", T0))
    assert h.task("received", "app.t0") == 1
    assert h.task("received", "app.t1") == 1
    assert h.task("received", OVERFLOW) == 3
    assert h.value("celery_exporter_cardinality_overflow_total", label="task_name") == 3


def test_worker_cap_stops_tracking_new_workers() -> None:
    h = Harness(max_workers=1)
    h.feed(heartbeat("a@h1", T0), heartbeat("b@h2", T0))
    assert h.value("celery_worker_up", hostname="h1", worker="a@h1") == 1
    assert h.value("celery_worker_up", hostname="h2", worker="b@h2") is None
    assert h.value("celery_exporter_cardinality_overflow_total", label="worker") == 1


def test_tracked_tasks_are_bounded() -> None:
    h = Harness(max_tracked_tasks=10)
    for i in range(50):
        h.feed(sent(f"u{i}", "app.add", T0))
    assert h.value("celery_exporter_tracked_tasks") == 10


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"type": "task-started", "hostname": WORKER, "timestamp": T0}, "bad_uuid"),
        ({"type": "task-started", "uuid": "x", "timestamp": T0}, "bad_hostname"),
        (
            {"type": "task-started", "uuid": "x", "hostname": WORKER, "timestamp": "now"},
            "bad_timestamp",
        ),
        (
            {
                "type": "task-succeeded",
                "uuid": "x",
                "hostname": WORKER,
                "timestamp": T0,
                "runtime": -1,
            },
            "bad_runtime",
        ),
        (
            {
                "type": "task-succeeded",
                "uuid": "x",
                "hostname": WORKER,
                "timestamp": T0,
                "runtime": float("nan"),
            },
            "bad_runtime",
        ),
        (
            {
                "type": "task-sent",
                "uuid": "x",
                "hostname": PRODUCER,
                "timestamp": T0,
                "eta": "tomorrow",
            },
            "bad_eta",
        ),
        ({"type": 7}, "bad_type"),
        ({"type": "worker-heartbeat", "hostname": WORKER, "active": "lots"}, "bad_active"),
        ({"type": "worker-heartbeat", "hostname": WORKER, "loadavg": "high"}, "bad_loadavg"),
    ],
)
def test_malformed_events_are_counted_by_reason_and_good_ones_still_count(
    bad: dict[str, object], reason: str
) -> None:
    h = Harness()
    lifecycle(h, "before")
    h.feed(bad)
    lifecycle(h, "after")
    assert h.value("celery_exporter_event_errors_total", reason=reason) == 1
    assert h.task("succeeded", "app.add") == 2


def test_a_clock_decades_off_is_rejected_before_it_reaches_a_histogram() -> None:
    h = Harness()
    h.feed(sent("u1", "app.add", T0), received("u1", "app.add", T0))
    h.feed(started("u1", T0 + 30 * 365 * 86400))
    assert h.value("celery_exporter_event_errors_total", reason="bad_timestamp") == 1
    labels = {"name": "app.add", "hostname": "worker-1", "queue_name": "celery"}
    assert h.value("celery_task_queue_wait_time_count", **labels) is None
    assert h.task("started", "app.add") == 0


def test_a_task_started_before_its_eta_waits_zero() -> None:
    h = Harness()
    h.feed(sent("u1", "app.add", T0, eta="2099-01-01T00:00:00+00:00"))
    h.feed(received("u1", "app.add", T0), started("u1", T0 + 1))
    labels = {"name": "app.add", "hostname": "worker-1", "queue_name": "celery"}
    assert h.task("started", "app.add") == 1
    assert h.value("celery_task_queue_wait_time_sum", **labels) == 0  # clamped: started early


def test_names_that_cannot_be_written_as_utf8_are_rejected() -> None:
    h = Harness()
    h.feed(received("u1", "bad\ud800name", T0), received("u2", "ok \u2603 name", T0))
    assert h.value("celery_exporter_event_errors_total", reason="bad_name") == 1
    assert h.task("received", "ok \u2603 name") == 1
    assert b"\xe2\x98\x83" in generate_latest(h.registry)  # the snowman made it out intact


def test_custom_event_types_do_not_mint_label_values() -> None:
    h = Harness()
    h.feed({"type": "my-custom-thing", "hostname": WORKER}, {"type": "worker-bogus-1"})
    assert h.value("celery_exporter_events_total", event="other") == 2


def test_huge_names_are_cut() -> None:
    h = Harness()
    h.feed(received("u1", "n" * 100_000, T0))
    assert h.task("received", "n" * 200) == 1


def test_prefix_static_labels_and_disabled_families() -> None:
    h = Harness(
        metric_prefix="jobs_",
        static_labels=(("env", "prod"),),
        disabled_metrics=frozenset({"task_runtime"}),
    )
    lifecycle(h, "u1")
    assert (
        h.value(
            "jobs_task_succeeded_total",
            name="app.add",
            hostname="worker-1",
            queue_name="celery",
            env="prod",
        )
        == 1
    )
    names = h.names()
    assert not any(n.startswith("jobs_task_runtime") for n in names)
    assert not any(n.startswith("celery_") for n in names)
    assert not any(n.endswith("_created") for n in names)


def test_a_task_whose_host_was_purged_counts_again_under_fresh_series() -> None:
    # The in-flight record keeps the row it counts in (state/task_rows.py): once the host's series
    # are forgotten, its next event must start fresh ones, zero-initialised, not the old ones.
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=3600)
    h.feed(heartbeat(WORKER, T0), received("u1", "app.add", T0))
    assert h.task("received", "app.add") == 1
    h.clock.advance(3700)
    h.tracker.expire()
    assert h.task("received", "app.add") is None
    h.feed(started("u1", T0 + 3700))
    assert h.task("received", "app.add") == 0
    assert h.task("started", "app.add") == 1


def test_a_task_sent_seen_after_task_received_moves_the_later_events_to_its_queue() -> None:
    h = Harness()
    h.feed(received("u1", "app.add", T0))  # no queue known: the fallback queue
    h.feed(sent("u1", "app.add", T0, queue="reports"), started("u1", T0 + 1))
    assert h.task("received", "app.add") == 1
    assert h.task("started", "app.add") == 0
    assert h.task("started", "app.add", queue="reports") == 1
    assert h.task("received", "app.add", queue="reports") == 0


def test_a_task_named_by_a_late_task_sent_counts_its_later_events_under_the_name() -> None:
    h = Harness()
    h.feed(started("u1", T0 + 1))  # no task-received, no name yet
    h.feed(sent("u1", "app.add", T0), succeeded("u1", T0 + 2))  # the send was late
    assert h.task("started", UNKNOWN) == 1
    assert h.task("succeeded", "app.add") == 1
    assert h.task("succeeded", UNKNOWN) == 0
