"""celery_exporter_task_events_missed_total: heartbeats' `processed` against task-started events,
replayed from scripted event streams with a fake clock."""

from __future__ import annotations

from tests.support.eventscript import WORKER, Harness, Worker, heartbeat, settle_beats, started

MISSED = "celery_exporter_task_events_missed_total"
LABELS = {"hostname": "worker-1", "worker": WORKER}


def missed(h: Harness, **labels: str) -> float | None:
    return h.value(MISSED, **(labels or LABELS))


def test_a_clean_stream_reads_zero_from_the_first_heartbeat() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    assert missed(h) == 0
    for _ in range(20):
        w.start_tasks(50)
        w.beat()
    w.beats(settle_beats())
    assert missed(h) == 0
    assert h.value("celery_worker_tasks_processed_total", **LABELS) == 1000


def test_lost_task_started_events_are_counted_after_the_grace() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    w.start_tasks(10)
    w.beat()
    w.start_tasks(7, deliver=False)  # e.g. Redis dropped the subscription meanwhile
    w.start_tasks(3)
    w.beat()
    w.beat()
    assert missed(h) == 0  # not yet: the events may still be on their way
    w.beats(settle_beats())
    assert missed(h) == 7
    w.start_tasks(100)
    w.beats(settle_beats())
    assert missed(h) == 7


def test_batched_events_that_arrive_after_the_heartbeat_are_not_missed() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    for _ in range(10):
        w.start_tasks(24, batch=True)
        w.beat()  # the heartbeat overtakes the batch, which is flushed a moment later
        w.flush()
    w.beats(settle_beats())
    assert missed(h) == 0


def test_the_grace_is_measured_in_the_stream_not_on_the_exporters_clock() -> None:
    # The exporter was paused for a minute, then reads the backlog: heartbeats and the
    # task-started events behind them arrive long after they were sent; nothing is missed.
    h = Harness()
    w = Worker(h)
    w.beat()
    w.start_tasks(5, batch=True)
    w.beat()
    h.clock.advance(60)
    w.flush()
    w.beats(settle_beats())
    assert missed(h) == 0


def test_a_started_event_stamped_just_after_the_heartbeat_that_counted_it_is_not_missed() -> None:
    # A thread pool counts the task, a heartbeat goes out, then task-started is stamped.
    h = Harness()
    w = Worker(h)
    w.beat()
    w.start_tasks(1)
    w.beat()
    w.processed += 1
    w.beat()
    w.h.feed(started("late-stamp", w.now + 0.001))
    w.beats(settle_beats())
    assert missed(h) == 0


def test_tasks_started_before_the_first_heartbeat_seen_are_not_counted() -> None:
    h = Harness()
    w = Worker(h)
    w.processed = 5000  # the worker ran long before this exporter started
    w.beat()
    w.start_tasks(10)
    w.beats(settle_beats())
    assert missed(h) == 0


def test_a_worker_with_task_events_off_reads_zero_missed_and_events_disabled() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    for _ in range(10):
        w.start_tasks(10, deliver=False)
        w.beat()
    assert missed(h) == 0
    assert h.value("celery_worker_task_events_enabled", **LABELS) == 0


def test_events_lost_before_the_first_task_event_arrives_count_once_events_are_seen() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    w.start_tasks(4, deliver=False)
    w.beat()
    w.start_tasks(1)  # the first task event: task events are on
    w.beat()
    w.start_tasks(6, deliver=False)
    w.start_tasks(1)
    w.beats(settle_beats())
    # The four lost before any task event could be task events switched off: not counted.
    assert missed(h) == 6


def test_a_restart_under_the_same_name_keeps_the_count_and_takes_a_new_baseline() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    w.start_tasks(1)
    w.start_tasks(3, deliver=False)
    w.beats(settle_beats())
    assert missed(h) == 3
    w.processed = 0  # restarted
    w.beat()
    w.start_tasks(5)
    w.start_tasks(2, deliver=False)
    w.beats(settle_beats())
    assert missed(h) == 5


def test_an_event_arriving_after_it_was_counted_missed_does_not_lower_the_counter() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    w.start_tasks(1)
    w.start_tasks(2, batch=True)
    w.beats(settle_beats())
    assert missed(h) == 2
    w.flush()
    w.beats(settle_beats())
    assert missed(h) == 2
    assert h.tracker.missed.ledgers[WORKER].late == 2


def test_workers_are_counted_apart_and_a_purged_worker_loses_its_series() -> None:
    h = Harness(purge_offline_worker_metrics=600.0)
    one, two = Worker(h), Worker(h, hostname="celery@worker-2")
    for w in (one, two):
        w.beat()
        w.start_tasks(1)
    two.start_tasks(4, deliver=False)
    for _ in range(settle_beats()):
        one.beat()
        two.now = one.now
        two.beat()
    assert missed(h) == 0
    assert missed(h, hostname="worker-2", worker="celery@worker-2") == 4
    # worker-2 goes silent; worker-1 keeps beating past the purge time
    for _ in range(400):
        one.beat()
    h.tracker.expire()
    assert missed(h, hostname="worker-2", worker="celery@worker-2") is None
    assert "celery@worker-2" not in h.tracker.missed.ledgers


def test_heartbeats_without_processed_and_out_of_order_ones_change_nothing() -> None:
    h = Harness()
    w = Worker(h)
    w.beat()
    w.start_tasks(3)
    w.beat()
    h.feed(heartbeat(WORKER, w.now - 1.0, processed=1))  # an old one, late
    h.feed(heartbeat(WORKER, w.now + 0.5, active=None, processed=None))  # a wake-up reply
    w.beats(settle_beats())
    assert missed(h) == 0
    assert h.value("celery_exporter_event_errors_total", reason="bad_processed") is None
