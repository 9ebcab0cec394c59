"""The oldest running task's age (state/running_tasks.py) and revokes by reason, from scripted
events through the tracker and its collector, on a fake clock."""

from __future__ import annotations

from typing import Any

from celery_exporter.state.running_tasks import HEARTBEAT_GRACE
from tests.support.eventscript import (
    WORKER,
    Harness,
    event,
    failed,
    heartbeat,
    received,
    retried,
    sent,
    started,
    succeeded,
)

TASK = "celery_task_oldest_running_age_seconds"
QUEUE = "celery_queue_oldest_running_task_age_seconds"
OTHER = "celery@worker-2"


def run(h: Harness, uuid: str, name: str = "app.slow", hostname: str = WORKER) -> None:
    """Task `uuid` is sent, received and started now."""
    now = h.clock.now
    h.feed(sent(uuid, name, now), received(uuid, name, now, hostname=hostname))
    h.feed(started(uuid, now, hostname=hostname))


def ages(h: Harness, name: str = "app.slow", queue: str = "celery") -> tuple[Any, Any]:
    return h.value(TASK, name=name, queue_name=queue), h.value(QUEUE, queue_name=queue)


def test_a_started_task_ages_with_the_exporter_clock_until_it_finishes() -> None:
    h = Harness()
    h.feed(heartbeat(WORKER, h.clock.now, active=1))
    run(h, "a")
    assert ages(h) == (0.0, 0.0)
    h.clock.advance(90)
    h.feed(heartbeat(WORKER, h.clock.now, active=1))
    assert ages(h) == (90.0, 90.0)
    h.feed(succeeded("a", h.clock.now))
    assert ages(h) == (0.0, 0.0)  # known pair, nothing running: 0, not absent


def test_the_oldest_per_name_and_queue_and_the_oldest_per_queue() -> None:
    h = Harness()
    run(h, "old", "app.slow")
    h.clock.advance(30)
    run(h, "new", "app.slow")
    run(h, "other", "app.fast")
    h.clock.advance(10)
    assert h.value(TASK, name="app.slow", queue_name="celery") == 40.0
    assert h.value(TASK, name="app.fast", queue_name="celery") == 10.0
    assert h.value(QUEUE, queue_name="celery") == 40.0
    h.feed(failed("old", h.clock.now))
    assert h.value(TASK, name="app.slow", queue_name="celery") == 10.0


def test_the_worker_timestamp_is_not_the_clock_a_skewed_worker_ages_nothing() -> None:
    h = Harness()
    now = h.clock.now
    h.feed(sent("a", "app.slow", now), received("a", "app.slow", now - 3600))
    h.feed(started("a", now - 3600))  # the worker's clock is an hour behind
    h.clock.advance(5)
    assert ages(h) == (5.0, 5.0)


def test_retried_revoked_and_rejected_runs_end() -> None:
    h = Harness()
    for uuid in ("r", "v", "j"):
        run(h, uuid)
    h.clock.advance(60)
    assert ages(h)[0] == 60.0
    h.feed(retried("r", h.clock.now))
    h.feed(event("task-revoked", WORKER, h.clock.now, uuid="v", terminated=True, expired=False))
    h.feed(event("task-rejected", WORKER, h.clock.now, uuid="j", requeue=False))
    assert ages(h) == (0.0, 0.0)
    # The retry runs again: timed from its own task-started.
    h.clock.advance(5)
    h.feed(started("r", h.clock.now))
    h.clock.advance(2)
    assert ages(h) == (2.0, 2.0)


def test_another_workers_revoke_does_not_end_the_run() -> None:
    h = Harness()
    run(h, "a")
    h.clock.advance(20)
    h.feed(event("task-revoked", OTHER, h.clock.now, uuid="a", terminated=False, expired=False))
    assert ages(h)[0] == 20.0


def test_a_worker_that_is_down_or_left_takes_its_tasks_out() -> None:
    h = Harness(worker_timeout=60.0)
    h.feed(heartbeat(WORKER, h.clock.now, active=1), heartbeat(OTHER, h.clock.now, active=1))
    run(h, "a", hostname=WORKER)
    run(h, "b", "app.other", hostname=OTHER)
    h.clock.advance(30)
    h.feed(heartbeat(OTHER, h.clock.now, active=1))
    h.feed(heartbeat(WORKER, h.clock.now, active=1, kind="worker-offline"))
    assert ages(h)[0] == 0.0  # said goodbye
    assert h.value(TASK, name="app.other", queue_name="celery") == 30.0
    h.clock.advance(61)  # OTHER silent past --worker-timeout: down
    assert h.value(TASK, name="app.other", queue_name="celery") == 0.0
    assert h.value(QUEUE, queue_name="celery") == 0.0


def test_a_worker_without_a_heartbeat_yet_keeps_its_tasks() -> None:
    h = Harness()
    run(h, "a")
    h.clock.advance(15)
    assert ages(h)[0] == 15.0


def test_an_idle_heartbeat_ends_a_run_whose_terminal_event_was_lost() -> None:
    h = Harness()
    h.feed(heartbeat(WORKER, h.clock.now, active=0))
    run(h, "a")  # its task-succeeded never comes
    h.clock.advance(HEARTBEAT_GRACE - 1)
    h.feed(heartbeat(WORKER, h.clock.now, active=0))
    assert ages(h)[0] == HEARTBEAT_GRACE - 1  # too recent to judge: batched events
    h.clock.advance(2)
    h.feed(heartbeat(WORKER, h.clock.now, active=0))
    assert ages(h)[0] == 0.0


def test_heartbeat_active_counts_the_newest_runs_a_hung_one_among_lost_ones() -> None:
    h = Harness()
    run(h, "lost-1")  # terminal events lost for these two
    h.clock.advance(100)
    run(h, "hung", "app.hung")
    h.clock.advance(100)
    run(h, "lost-2")
    h.clock.advance(100)
    # Running for real: "hung" only; the worker's heartbeat says one task.
    h.feed(heartbeat(WORKER, h.clock.now, active=1))
    # The one counted is the newest: lost-2 (100 s), not hung (200 s): low, never high.
    assert h.value(TASK, name="app.hung", queue_name="celery") == 0.0
    assert h.value(TASK, name="app.slow", queue_name="celery") == 100.0
    assert h.value(QUEUE, queue_name="celery") == 100.0
    h.feed(heartbeat(WORKER, h.clock.now, active=2))
    assert h.value(TASK, name="app.hung", queue_name="celery") == 200.0
    assert h.value(TASK, name="app.slow", queue_name="celery") == 100.0
    # A task started after the heartbeat counts whatever `active` said.
    h.feed(heartbeat(WORKER, h.clock.now, active=0))
    run(h, "fresh", "app.fresh")
    h.clock.advance(HEARTBEAT_GRACE + 5)
    assert h.value(TASK, name="app.fresh", queue_name="celery") == HEARTBEAT_GRACE + 5
    assert h.value(TASK, name="app.hung", queue_name="celery") == 0.0


def test_a_retrys_re_send_waits_it_does_not_run() -> None:
    h = Harness()
    run(h, "a")
    h.clock.advance(10)
    h.feed(sent("a", "app.slow", h.clock.now))  # task-retried lost, re-send seen
    assert ages(h)[0] == 0.0


def test_names_past_the_cap_fold_into_overflow() -> None:
    h = Harness(max_task_names=1)
    run(h, "a", "app.one")
    run(h, "b", "app.two")
    h.clock.advance(3)
    assert h.value(TASK, name="app.one", queue_name="celery") == 3.0
    assert h.value(TASK, name="__overflow__", queue_name="celery") == 3.0
    assert h.value(TASK, name="app.two", queue_name="celery") is None


def test_revokes_are_counted_by_reason_and_the_drop_in_counter_is_unchanged() -> None:
    h = Harness()
    now = h.clock.now
    h.feed(*(sent(f"e{i}", "app.report", now) for i in range(3)), sent("t", "app.report", now))
    h.feed(sent("o", "app.report", now))
    for i in range(3):  # a worker discards an expired task before any task-received
        h.feed(event("task-revoked", WORKER, now, uuid=f"e{i}", terminated=False, expired=True))
    h.feed(received("t", "app.report", now), started("t", now))
    h.feed(event("task-revoked", WORKER, now, uuid="t", terminated=True, signum=15, expired=False))
    h.feed(event("task-revoked", WORKER, now, uuid="o", terminated=False, expired=False))
    labels = {"name": "app.report", "hostname": "worker-1", "queue_name": "celery"}
    by_reason = {
        reason: h.value("celery_task_revoked_by_reason_total", **labels, reason=reason)
        for reason in ("expired", "terminated", "other")
    }
    assert by_reason == {"expired": 3.0, "terminated": 1.0, "other": 1.0}
    assert h.task("revoked", "app.report") == 5.0
    families = {m.name: m for m in h.registry.collect()}
    assert families["celery_task_revoked"].samples[0].labels.keys() == {
        "name",
        "hostname",
        "queue_name",
    }


def test_revokes_by_reason_go_with_their_host() -> None:
    h = Harness(worker_timeout=10.0, purge_offline_worker_metrics=20.0)
    h.feed(heartbeat(WORKER, h.clock.now))
    h.feed(sent("e", "app.report", h.clock.now))
    h.feed(event("task-revoked", WORKER, h.clock.now, uuid="e", terminated=False, expired=True))
    labels = {"name": "app.report", "hostname": "worker-1", "queue_name": "celery"}
    assert h.value("celery_task_revoked_by_reason_total", **labels, reason="expired") == 1.0
    h.clock.advance(30)
    h.tracker.expire()
    assert h.value("celery_task_revoked_by_reason_total", **labels, reason="expired") is None
