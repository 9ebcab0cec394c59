"""A task-sent event that arrives after its task started or finished (Celery publishes the task
before it sends task-sent): the queue wait is still observed once."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from celery_exporter.state import late_sends as late_sends_module
from tests.support.eventscript import (
    WORKER,
    Harness,
    event,
    received,
    retried,
    sent,
    started,
    succeeded,
)

T0 = 1_700_000_000.0
LABELS = {"name": "app.add", "hostname": "worker-1", "queue_name": "celery"}
AGE = "celery_queue_oldest_task_age_seconds"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def waits(h: Harness, **labels: str) -> tuple[Any, Any]:
    labels = labels or LABELS
    return (
        h.value("celery_task_queue_wait_time_count", **labels),
        h.value("celery_task_queue_wait_time_sum", **labels),
    )


@pytest.mark.parametrize("finished_first", [False, True])
def test_every_order_of_five_tasks_observes_five_waits(finished_first: bool) -> None:
    h = Harness()
    h.feed(sent("warm", "app.other", T0 - 10))  # producers are known to send task-sent
    h.feed(received("warm", "app.other", T0 - 9), succeeded("warm", T0 - 8))
    for i in range(5):
        uuid = f"u{i}"
        h.feed(received(uuid, "app.add", T0 + i + 0.1), started(uuid, T0 + i + 0.5))
        if finished_first:
            h.feed(succeeded(uuid, T0 + i + 0.8))
        h.feed(sent(uuid, "app.add", T0 + i))
        if not finished_first:
            h.feed(succeeded(uuid, T0 + i + 0.8))
    assert waits(h) == (5, pytest.approx(2.5))
    assert h.task("sent", "app.add", hostname="web-1") == 5
    for kind in ("received", "started", "succeeded"):
        assert h.task(kind, "app.add") == 5
    assert h.value("celery_exporter_tracked_tasks") == 0
    assert h.value(AGE, queue_name="celery") == 0  # none of them waits in the queue


def test_a_late_send_with_an_eta_waits_from_the_eta_and_clamps_at_zero() -> None:
    h = Harness()
    h.feed(received("a", "app.add", T0), started("a", T0 + 12))
    h.feed(sent("a", "app.add", T0, eta=iso(T0 + 10)))  # ready at the ETA: waited 2 s
    h.feed(received("b", "app.add", T0), started("b", T0 + 1), succeeded("b", T0 + 2))
    h.feed(sent("b", "app.add", T0, eta=iso(T0 + 5)))  # started before its ETA: 0, not -4
    assert waits(h) == (2, pytest.approx(2.0))
    assert h.value("celery_task_queue_wait_time_bucket", le="0.05", **LABELS) == 1


def test_a_late_send_observes_under_the_labels_the_worker_events_used() -> None:
    h = Harness()
    h.feed(received("a", "app.add", T0 + 0.1), started("a", T0 + 0.5))
    h.feed(sent("a", "app.add", T0, queue="routed"))  # the worker's events guessed "celery"
    h.feed(succeeded("a", T0 + 1))
    assert waits(h) == (1, pytest.approx(0.5))
    assert waits(h, **{**LABELS, "queue_name": "routed"}) == (None, None)
    # The task's worker-side counts stay under one label set.
    for kind in ("received", "started", "succeeded"):
        assert h.task(kind, "app.add") == 1
        assert h.task(kind, "app.add", queue="routed") in (None, 0)
    assert h.task("sent", "app.add", hostname="web-1", queue="routed") == 1


def test_a_retry_without_its_first_send_seen_waits_again_from_its_resend() -> None:
    h = Harness()
    h.feed(received("a", "app.add", T0), started("a", T0 + 1), retried("a", T0 + 1.5))
    h.feed(sent("a", "app.add", T0 + 1.6))  # the retry's re-send: stamped after the start
    h.feed(received("a", "app.add", T0 + 1.7), started("a", T0 + 4.6), succeeded("a", T0 + 5))
    assert waits(h) == (1, pytest.approx(3.0))
    assert h.task("started", "app.add") == 2
    assert h.value("celery_exporter_tracked_tasks") == 0


def test_the_original_send_arriving_after_a_retry_started_is_not_a_resend() -> None:
    h = Harness()
    h.feed(received("a", "app.add", T0 + 0.2), started("a", T0 + 1), retried("a", T0 + 1.5))
    h.feed(sent("a", "app.add", T0))  # the original, late: waited 1 s
    h.feed(sent("a", "app.add", T0 + 1.6))  # the retry's re-send
    h.feed(received("a", "app.add", T0 + 1.7), started("a", T0 + 2.6))
    assert waits(h) == (2, pytest.approx(2.0))
    assert h.task("sent", "app.add", hostname="web-1") == 2


def test_a_late_send_of_a_task_that_never_reported_started_leaves_nothing_behind() -> None:
    h = Harness()
    h.feed(received("a", "app.add", T0), succeeded("a", T0 + 1), sent("a", "app.add", T0 - 1))
    assert waits(h) == (None, None)
    assert h.task("sent", "app.add", hostname="web-1") == 1
    assert h.value("celery_exporter_tracked_tasks") == 0
    assert h.value(AGE, queue_name="celery") == 0


def test_finished_tasks_are_remembered_only_while_producers_may_send_task_sent() -> None:
    h = Harness()
    h.clock.advance(late_sends_module.SENDS_GRACE)
    h.tracker.expire()  # no task-sent so far: producers do not send them
    h.feed(received("a", "app.add", T0), started("a", T0 + 1), succeeded("a", T0 + 2))
    assert len(h.tracker.tasks.late_sends.tasks) == 0
    h.feed(sent("a", "app.add", T0))  # against expectations, one came: not a wait to guess
    assert waits(h) == (None, None)
    # From now on producers are known to send them.
    h.feed(received("b", "app.add", T0), started("b", T0 + 1), succeeded("b", T0 + 2))
    h.feed(sent("b", "app.add", T0))
    assert waits(h) == (1, pytest.approx(1.0))


def test_the_memory_of_finished_tasks_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(late_sends_module, "RECENTLY_FINISHED", 100)
    h = Harness()
    for i in range(150):
        uuid = f"u{i}"
        h.feed(received(uuid, "app.add", T0), started(uuid, T0 + 1), succeeded(uuid, T0 + 2))
        assert len(h.tracker.tasks.late_sends.tasks) <= 100
    h.feed(sent("u149", "app.add", T0))  # the newest are remembered
    assert waits(h) == (1, pytest.approx(1.0))
    assert len(h.tracker.tasks.late_sends.tasks) < 100
    h.feed(event("task-sent", WORKER, T0, uuid="u0", name="app.add", queue="celery"))
    assert h.value("celery_exporter_tracked_tasks") == 1  # forgotten: an ordinary send
