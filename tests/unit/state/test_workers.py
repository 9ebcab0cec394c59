"""A worker that says goodbye (worker-offline): its gauges go at once, its counters stay no lower
until the purge and continue if it comes back. Scripted events, a fake clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.eventscript import (
    WORKER,
    Harness,
    Worker,
    heartbeat,
    received,
    settle_beats,
    started,
)

T0 = 1_700_000_000.0
LABELS = {"hostname": "worker-1", "worker": WORKER}
PROCESSED = "celery_worker_tasks_processed_total"
MISSED = "celery_exporter_task_events_missed_total"
# Every per-worker gauge the tracker reports; none may outlive a goodbye.
GAUGES = (
    "celery_worker_up",
    "celery_worker_tasks_active",
    "celery_worker_last_heartbeat_timestamp_seconds",
    "celery_worker_task_events_enabled",
    "celery_worker_tasks_prefetched",
    "celery_worker_tasks_scheduled",
)


def gauges(h: Harness, worker: str = WORKER) -> dict[str, float]:
    """The per-worker gauge samples of `worker`, loadavg included."""
    return {
        s.name: s.value
        for family in h.registry.collect()
        if family.type == "gauge"
        for s in family.samples
        if s.labels.get("worker") == worker
    }


def busy_worker(h: Harness) -> Worker:
    """A worker that processed 20 tasks, 5 of whose task-started events were lost, and that
    holds one prefetched task: every per-worker series is present and non-zero."""
    w = Worker(h)
    w.beat()
    w.start_tasks(15)
    w.start_tasks(5, deliver=False)
    w.beats(settle_beats())
    h.feed(received("held", "app.add", w.now))
    return w


def goodbye(h: Harness, w: Worker) -> None:
    w.now += 1
    h.clock.now = w.now
    h.feed(heartbeat(WORKER, w.now, active=None, processed=None, kind="worker-offline"))


def hello(h: Harness, w: Worker, processed: int) -> None:
    w.now += 1
    h.clock.now = w.now
    w.processed = processed
    h.feed(heartbeat(WORKER, w.now, processed=processed, kind="worker-online"))


def test_goodbye_keeps_the_counters_and_drops_every_gauge() -> None:
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=3600)
    w = busy_worker(h)
    assert h.value(PROCESSED, **LABELS) == 20
    assert h.value(MISSED, **LABELS) == 5
    assert set(GAUGES) <= set(gauges(h))
    assert h.value("celery_worker_loadavg", period="1m", **LABELS) == 0.5
    goodbye(h, w)
    assert gauges(h) == {}  # no `up 0` for CeleryWorkerDown, no loadavg, nothing held
    assert h.value(PROCESSED, **LABELS) == 20
    assert h.value(MISSED, **LABELS) == 5
    assert h.task("received", "app.add") == 1
    # Well past --worker-timeout: still the same counters, still no gauge.
    h.clock.advance(1800)
    h.tracker.expire()
    assert gauges(h) == {}
    assert h.value(PROCESSED, **LABELS) == 20
    assert h.value(MISSED, **LABELS) == 5
    assert h.task("received", "app.add") == 1


def test_the_goodbye_carries_the_final_processed_count() -> None:
    h = Harness()
    h.feed(heartbeat(WORKER, T0, processed=10, kind="worker-online"))
    h.feed(heartbeat(WORKER, T0 + 1, active=0, processed=13, kind="worker-offline"))
    assert h.value(PROCESSED, **LABELS) == 13
    assert h.value("celery_worker_up", **LABELS) is None


def test_goodbye_then_hello_of_the_same_process_continues_every_counter() -> None:
    """A consumer restarting with the broker (a Sentinel failover): the process lives on."""
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=3600)
    w = busy_worker(h)
    goodbye(h, w)
    hello(h, w, processed=20)
    assert h.value(PROCESSED, **LABELS) == 20
    assert h.value(MISSED, **LABELS) == 5
    assert h.value("celery_worker_up", **LABELS) == 1
    w.start_tasks(10)
    w.beats(settle_beats())
    assert h.value(PROCESSED, **LABELS) == 30
    assert h.value(MISSED, **LABELS) == 5


def test_goodbye_then_hello_of_a_new_process_never_lowers_a_counter() -> None:
    """A restart under the same node name: the new process counts `processed` from 0."""
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=3600)
    w = busy_worker(h)
    goodbye(h, w)
    h.clock.advance(120)  # longer than --worker-timeout: the old rule had purged it by now
    w.now = h.clock.now
    h.tracker.expire()
    hello(h, w, processed=0)
    assert h.value(PROCESSED, **LABELS) == 20  # 20 + 0, not 0
    assert h.value(MISSED, **LABELS) == 5
    assert h.task("received", "app.add") == 1
    w.start_tasks(7)
    w.start_tasks(2, deliver=False)
    w.beats(settle_beats())
    assert h.value(PROCESSED, **LABELS) == 29
    assert h.value(MISSED, **LABELS) == 7
    assert h.value("celery_worker_up", **LABELS) == 1


def test_goodbye_then_the_purge_removes_everything() -> None:
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=600)
    w = busy_worker(h)
    goodbye(h, w)
    h.clock.advance(600)
    h.tracker.expire()
    assert h.value(PROCESSED, **LABELS) == 20  # not yet: 600 s is not past the purge
    h.clock.advance(1)
    assert h.value(PROCESSED, **LABELS) is None  # hidden at scrape time already
    assert h.value(MISSED, **LABELS) is None
    h.tracker.expire()  # the event thread frees the memory, with the host's task series
    assert h.task("received", "app.add") is None
    assert h.tracker.workers.records == {}
    assert h.tracker.missed.ledgers == {}
    # Back after the purge: a new series from the worker's own count, like any new worker.
    hello(h, w, processed=3)
    assert h.value(PROCESSED, **LABELS) == 3


def test_with_the_purge_disabled_a_departed_worker_gives_way_to_a_new_one() -> None:
    h = Harness(max_workers=2, purge_offline_worker_metrics=0)
    h.feed(heartbeat("celery@a", T0, processed=4), received("x", "app.add", T0, "celery@a"))
    h.feed(heartbeat("celery@b", T0, processed=1))
    h.feed(heartbeat("celery@a", T0 + 1, kind="worker-offline"))
    h.clock.advance(86_400)
    assert h.value(PROCESSED, hostname="a", worker="celery@a") == 4  # never purged
    h.feed(heartbeat("celery@c", T0 + 86_400, processed=2))  # the table is full: a goes
    assert h.value("celery_worker_up", hostname="c", worker="celery@c") == 1
    assert h.value(PROCESSED, hostname="a", worker="celery@a") is None
    assert h.value("celery_exporter_cardinality_overflow_total", label="worker") == 0
    h.tracker.expire()
    assert h.task("received", "app.add", hostname="a") is None
    # No departed worker left to give way: a fourth is refused and counted.
    h.feed(heartbeat("celery@d", T0 + 86_400, processed=2))
    assert h.value("celery_worker_up", hostname="d", worker="celery@d") is None
    assert h.value("celery_exporter_cardinality_overflow_total", label="worker") == 1
    assert h.value("celery_worker_up", hostname="b", worker="celery@b") == 0  # silent, kept


def test_the_worker_that_departed_longest_ago_gives_way_and_one_back_does_not() -> None:
    h = Harness(max_workers=3)
    for node in ("celery@a", "celery@b", "celery@c"):
        h.feed(heartbeat(node, T0, processed=1))
    h.feed(heartbeat("celery@b", T0 + 1, kind="worker-offline"))
    h.feed(heartbeat("celery@a", T0 + 2, kind="worker-offline"))
    h.feed(heartbeat("celery@c", T0 + 3, kind="worker-offline"))
    h.feed(heartbeat("celery@c", T0 + 4, processed=1, kind="worker-online"))  # back: stays
    h.feed(heartbeat("celery@d", T0 + 5, processed=1))
    h.feed(heartbeat("celery@e", T0 + 5, processed=1))
    h.tracker.expire()
    assert set(h.tracker.workers.records) == {"celery@c", "celery@d", "celery@e"}
    h.feed(heartbeat("celery@f", T0 + 6, processed=1))  # nobody departed: refused
    assert set(h.tracker.workers.records) == {"celery@c", "celery@d", "celery@e"}
    assert h.value("celery_exporter_cardinality_overflow_total", label="worker") == 1


def test_a_silent_worker_still_reads_down_until_the_purge() -> None:
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=3600)
    busy_worker(h)
    h.clock.advance(61 + 15 * 60)  # SIGKILL: no goodbye; long enough for CeleryWorkerDown
    h.tracker.expire()
    assert h.value("celery_worker_up", **LABELS) == 0
    assert h.value(PROCESSED, **LABELS) == 20


# One worker's lifecycle: heartbeats, goodbyes, hellos of the same or a new process, task
# events, and time passing (less than the purge).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("beat"), st.integers(0, 5)),
        st.tuples(st.just("goodbye"), st.just(0)),
        st.tuples(st.just("hello"), st.booleans().map(int)),  # 1: a new process
        st.tuples(st.just("task"), st.booleans().map(int)),  # 1: its task-started is lost
        st.tuples(st.just("wait"), st.sampled_from([1, 30, 61, 300])),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_counters_stay_present_and_never_fall_and_gauges_go_with_a_goodbye(
    script: list[tuple[str, int]],
) -> None:
    h = Harness(worker_timeout=60, purge_offline_worker_metrics=100_000)
    now, processed, count, departed = T0, 0, 0, False
    h.clock.now = now
    h.feed(heartbeat(WORKER, now, processed=0, kind="worker-online"))
    before = {PROCESSED: 0.0, MISSED: 0.0}
    for kind, arg in script:
        now += 0.5
        if kind == "beat":
            processed += arg
            h.feed(heartbeat(WORKER, now, processed=processed))
            departed = False
        elif kind == "goodbye":
            h.feed(heartbeat(WORKER, now, active=None, processed=None, kind="worker-offline"))
            departed = True
        elif kind == "hello":
            processed = 0 if arg else processed
            h.feed(heartbeat(WORKER, now, processed=processed, kind="worker-online"))
            departed = False
        elif kind == "task":
            count, processed = count + 1, processed + 1
            if not arg:
                h.feed(started(f"t{count}", now))
        else:
            now += arg
        h.clock.now = now
        h.tracker.expire()
        for name, value in before.items():
            after = h.value(name, **LABELS)
            assert after is not None and after >= value, (name, value, after)
            before[name] = after
        present = set(gauges(h))
        assert not present if departed else "celery_worker_up" in present, present
