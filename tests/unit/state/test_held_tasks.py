"""celery_worker_tasks_prefetched / _scheduled: tasks a worker holds and has not started, from
scripted task events with a fake clock."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from celery_exporter.state.held_tasks import GRACE
from tests.support.eventscript import (
    WORKER,
    Harness,
    event,
    failed,
    heartbeat,
    received,
    started,
    succeeded,
)

LABELS = {"hostname": "worker-1", "worker": WORKER}
OTHER = "celery@worker-2"


def held(h: Harness, worker: str = WORKER) -> tuple[float | None, float | None]:
    labels = {"hostname": worker.partition("@")[2], "worker": worker}
    return (
        h.value("celery_worker_tasks_prefetched", **labels),
        h.value("celery_worker_tasks_scheduled", **labels),
    )


def with_eta(uuid: str, ts: float, eta: float, hostname: str = WORKER) -> dict[str, Any]:
    message = received(uuid, "app.later", ts, hostname=hostname)
    message["eta"] = datetime.fromtimestamp(eta, timezone.utc).isoformat()
    return message


def online(h: Harness, worker: str = WORKER, active: int = 1) -> None:
    h.feed(heartbeat(worker, h.clock.now, active=active, processed=0))


def test_received_tasks_are_prefetched_until_they_start() -> None:
    h = Harness()
    now = h.clock.now
    online(h)
    assert held(h) == (0, 0)
    h.feed([received(f"t{i}", "app.add", now) for i in range(3)])
    assert held(h) == (3, 0)
    h.feed(started("t0", now + 1))
    assert held(h) == (2, 0)
    h.feed(succeeded("t0", now + 2), started("t1", now + 2))
    assert held(h) == (1, 0)


def test_a_future_eta_is_scheduled_and_turns_prefetched_when_it_passes() -> None:
    h = Harness()
    now = h.clock.now
    online(h)
    h.feed(with_eta("later", now, eta=now + 60), received("plain", "app.add", now))
    assert held(h) == (1, 1)
    h.clock.advance(61)
    online(h)
    assert held(h) == (2, 0)
    h.feed(started("later", h.clock.now))
    assert held(h) == (1, 0)


def test_tasks_given_up_without_starting_are_no_longer_held() -> None:
    h = Harness()
    now = h.clock.now
    online(h)
    h.feed([received(f"t{i}", "app.add", now) for i in range(4)])
    h.feed(
        event("task-revoked", WORKER, now + 1, uuid="t0", terminated=False, expired=False),
        event("task-rejected", WORKER, now + 1, uuid="t1", requeue=False),
        failed("t2", now + 1, exception="NotRegistered('x')"),
        succeeded("t3", now + 1),
    )
    assert held(h) == (0, 0)


def test_an_idle_heartbeat_clears_tasks_whose_started_event_was_lost() -> None:
    h = Harness()
    now = h.clock.now
    online(h)
    h.feed(received("lost", "app.add", now), with_eta("eta-lost", now, eta=now + 1))
    h.clock.advance(GRACE / 2)
    online(h, active=0)  # too soon: task-started may be on its way
    assert held(h) == (2, 0)
    h.clock.advance(GRACE)
    online(h, active=1)  # busy: a prefetched task may wait for a free slot
    assert held(h) == (2, 0)
    online(h, active=0)
    assert held(h) == (0, 0)


def test_an_idle_heartbeat_keeps_tasks_whose_eta_is_ahead() -> None:
    h = Harness()
    now = h.clock.now
    online(h)
    h.feed(with_eta("tomorrow", now, eta=now + 86400))
    h.clock.advance(3 * GRACE)
    online(h, active=0)
    assert held(h) == (0, 1)


def test_a_worker_that_goes_away_drops_what_it_held() -> None:
    h = Harness(worker_timeout=60.0)
    now = h.clock.now
    online(h)
    online(h, OTHER)
    h.feed(received("a", "app.add", now), with_eta("b", now, now + 600))
    h.feed(received("c", "app.add", now, hostname=OTHER))
    h.feed(event("worker-offline", OTHER, now + 1, active=0, processed=0))
    assert held(h, OTHER) == (None, None)  # said goodbye: no gauges, only counters
    assert h.tracker.held_tasks.counts(h.clock.now) == {WORKER: (1, 1)}
    h.clock.advance(61)  # no heartbeat from worker-1 any more: down
    assert held(h) == (0, 0)
    assert h.value("celery_worker_up", **LABELS) == 0


def test_a_task_redelivered_to_another_worker_moves_with_it() -> None:
    h = Harness()
    now = h.clock.now
    online(h)
    online(h, OTHER)
    h.feed(received("t", "app.add", now))
    h.feed(received("t", "app.add", now + 5, hostname=OTHER))
    assert held(h) == (0, 0)
    assert held(h, OTHER) == (1, 0)


def test_memory_is_bounded_by_the_tracked_tasks_cap() -> None:
    h = Harness(max_tracked_tasks=100)
    now = h.clock.now
    online(h)
    h.feed([received(f"t{i}", "app.add", now) for i in range(1000)])
    kept = len(h.tracker.held_tasks)
    assert 90 <= kept <= 100  # past the cap the oldest tenth goes at once
    assert held(h) == (kept, 0)
    h.feed(started("t999", now + 1), started("t0", now + 1))  # newest kept, oldest forgotten
    assert held(h) == (kept - 1, 0)
    h.feed([started(f"t{i}", now + 1) for i in range(1000)])
    assert len(h.tracker.held_tasks) == 0
    assert held(h) == (0, 0)
