"""celery_queue_oldest_task_age_seconds: scripted events, scripted broker polls, a fake clock."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from prometheus_client.registry import CollectorRegistry

from celery_exporter.config import Config
from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.tracker_collector import TrackerCollector
from celery_exporter.poll.poller import QueuePoller
from celery_exporter.poll.queue_probe import ProbeError, QueueProbe, QueueReading
from celery_exporter.poll.redis_queues import RedisQueueProbe
from celery_exporter.state.broker_evidence import BrokerEvidence, BrokerHead, HeadWatch, parse_head
from celery_exporter.state.queue_age import QueueAge
from celery_exporter.state.tracker import Tracker
from celery_exporter.state.workers import WorkerView
from tests.support.eventscript import (
    WORKER,
    FakeClock,
    event,
    failed,
    heartbeat,
    received,
    sent,
    started,
    succeeded,
)

AGE = "celery_queue_oldest_task_age_seconds"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


class Cluster:
    """A tracker fed scripted events, with a scripted broker poll and a fake clock."""

    def __init__(self, **overrides: Any) -> None:
        self.clock = FakeClock()
        config = dataclasses.replace(Config(broker_url="redis://localhost"), **overrides)
        self.evidence: BrokerEvidence | None = None
        self.tracker = Tracker(config, clock=self.clock, broker_evidence=lambda: self.evidence)
        self.registry = CollectorRegistry(auto_describe=False)
        factory = FamilyFactory()
        self.registry.register(
            TrackerCollector(
                self.tracker, factory, config.runtime_buckets, config.queue_wait_buckets
            )
        )

    @property
    def now(self) -> float:
        return self.clock.now

    def feed(self, *messages: Any) -> None:
        for message in messages:
            self.tracker.record_message(message)

    def poll(
        self,
        lengths: Mapping[str, int],
        heads: Mapping[str, tuple[BrokerHead, ...]] | None = None,
        unacked_ids: frozenset[str] | None = None,
    ) -> None:
        """A broker poll that read the queues now; the event thread's housekeeping follows."""
        self.evidence = BrokerEvidence(self.now, lengths, heads, unacked_ids)
        self.clock.advance(1)
        self.tracker.expire()

    def age(self, queue: str = "celery") -> float | None:
        return self.registry.get_sample_value(AGE, {"queue_name": queue})


def expiring(event: dict[str, Any], expires: str) -> dict[str, Any]:
    return {**event, "expires": expires}


def head(task_id: str | None, first_seen: float, eta: float | None = None) -> BrokerHead:
    return BrokerHead(task_id or "tag-1", task_id, eta, None, first_seen)


# ---- events alone ---------------------------------------------------------------------


def test_age_grows_with_the_clock_until_the_task_starts() -> None:
    c = Cluster()
    c.feed(sent("a", "app.add", c.now))
    assert c.age() == 0
    c.clock.advance(30)
    assert c.age() == 30
    c.clock.advance(1)
    assert c.age() == 31  # computed at scrape time: grows second by second while stuck
    c.feed(started("a", c.now))
    assert c.age() == 0


def test_the_oldest_of_several_waiting_tasks_wins_and_queues_are_separate() -> None:
    c = Cluster()
    t0 = c.now
    c.feed(sent("a", "app.add", t0), sent("b", "app.add", t0 + 5), sent("x", "app.x", t0, "other"))
    c.clock.advance(20)
    assert c.age() == 20
    c.feed(started("a", c.now))
    assert c.age() == 15
    assert c.age("other") == 20


def test_a_prefetched_task_still_waits() -> None:
    c = Cluster()
    c.feed(sent("a", "app.slow", c.now))
    c.clock.advance(2)
    c.feed(received("a", "app.slow", c.now))
    c.clock.advance(100)
    assert c.age() == 102
    c.feed(started("a", c.now), succeeded("a", c.now + 1))
    assert c.age() == 0


def test_without_task_sent_a_prefetched_task_counts_from_task_received() -> None:
    c = Cluster()
    c.feed(received("a", "app.slow", c.now - 50))  # the worker's clock is not the start
    c.clock.advance(10)
    assert c.age() == 10  # a lower bound: from when the exporter saw it


def test_a_task_whose_eta_is_ahead_does_not_wait_until_the_eta_passes() -> None:
    c = Cluster()
    c.feed(sent("a", "app.later", c.now, eta=iso(c.now + 60)))
    c.clock.advance(59)
    assert c.age() == 0
    c.clock.advance(11)
    assert c.age() == 10


def test_revoked_failed_and_rejected_tasks_stop_waiting_a_requeued_one_waits_on() -> None:
    c = Cluster()
    t0 = c.now
    for uuid in "abcd":
        c.feed(sent(uuid, "app.add", t0), received(uuid, "app.add", t0))
    c.clock.advance(10)
    c.feed(event("task-revoked", WORKER, c.now, uuid="a", terminated=False, expired=False))
    c.feed(failed("b", c.now))
    c.feed(event("task-rejected", WORKER, c.now, uuid="c", requeue=False))
    assert c.age() == 10  # d still waits
    c.feed(event("task-rejected", WORKER, c.now, uuid="d", requeue=True))
    assert c.age() == 10  # back in the broker, still waiting since it was sent
    c.feed(started("d", c.now))
    assert c.age() == 0


def test_a_retry_waits_again_from_its_countdown() -> None:
    c = Cluster()
    c.feed(sent("a", "app.flaky", c.now), received("a", "app.flaky", c.now))
    c.feed(started("a", c.now))
    c.clock.advance(5)
    c.feed(sent("a", "app.flaky", c.now, eta=iso(c.now + 30)))
    c.feed(event("task-retried", WORKER, c.now, uuid="a", exception="Retry()", traceback=""))
    c.clock.advance(40)
    assert c.age() == 10


def test_a_late_first_task_sent_neither_unholds_nor_revives_a_task() -> None:
    c = Cluster()
    t0 = c.now
    # A producer's first task-sent can arrive after the worker's events for the task.
    c.feed(received("held", "app.add", t0 + 1), sent("held", "app.add", t0, "routed"))
    c.feed(received("done", "app.add", t0 + 1), started("done", t0 + 1))
    c.feed(succeeded("done", t0 + 2), sent("done", "app.add", t0 - 20))
    c.clock.advance(30)
    assert c.age() == 0  # "done" does not wait
    assert c.age("routed") == 30  # "held": prefetched, timed from its send, in its queue
    c.poll({"celery": 0, "routed": 0})  # an empty broker does not unhold it either
    assert c.age("routed") == 31
    c.feed(started("held", c.now))
    assert c.age("routed") == 0
    assert len(c.tracker.queue_age) == 0


def test_a_producer_clock_ahead_reads_zero_not_negative() -> None:
    c = Cluster()
    c.feed(sent("a", "app.add", c.now + 30))
    assert c.age() == 0


def test_an_expired_task_stops_counting() -> None:
    c = Cluster()
    c.feed(expiring(sent("a", "app.add", c.now), iso(c.now + 60)), sent("b", "app.add", c.now + 5))
    c.clock.advance(30)
    assert c.age() == 30
    c.clock.advance(31)
    assert c.age() == 56  # b
    c.feed(event("task-revoked", WORKER, c.now, uuid="a", terminated=False, expired=True))
    assert len(c.tracker.queue_age) == 1


def test_waiting_tasks_are_bounded_by_the_in_flight_cap() -> None:
    c = Cluster(max_tracked_tasks=3)
    for i in range(10):
        c.feed(sent(f"t{i}", "app.add", c.now + i))
    assert len(c.tracker.queue_age) == 3
    c.clock.advance(100)
    assert c.age() == 93  # the newest three remain: past the cap, a lower bound


def test_an_unparseable_expiry_costs_nothing_but_the_expiry() -> None:
    c = Cluster()
    c.feed(expiring(sent("a", "app.add", c.now), "not a date"))
    c.clock.advance(5)
    assert c.age() == 5
    assert c.tracker.snapshot().errors == {}


# ---- broker evidence: no phantom ages -------------------------------------------------


def test_a_purged_queue_reads_zero_after_the_next_poll() -> None:
    c = Cluster()
    c.feed(sent("a", "app.add", c.now), sent("b", "app.add", c.now))
    c.clock.advance(60)
    c.poll({"celery": 0})  # purged (or taken by a worker whose task-received was lost)
    assert c.age() == 0
    assert len(c.tracker.queue_age) == 0


def test_a_task_sent_after_the_poll_read_survives_an_empty_reading() -> None:
    c = Cluster()
    c.evidence = BrokerEvidence(c.now, {"celery": 0})  # the broker was read here...
    c.clock.advance(1)
    c.feed(sent("late", "app.add", c.now))  # ...and this was published after
    c.clock.advance(4)
    c.tracker.expire()
    assert c.age() == 4


def test_a_queue_of_n_messages_holds_only_the_n_newest_unclaimed_tasks() -> None:
    c = Cluster()
    t0 = c.now
    c.feed(*(sent(f"t{i}", "app.add", t0 + i) for i in range(5)))
    c.clock.advance(100)
    c.poll({"celery": 2})  # t0..t2 left the queue and their events were lost
    assert c.age() == 100 - 3 + 1


def test_prefetched_tasks_survive_an_empty_queue_while_their_busy_worker_lives() -> None:
    c = Cluster()
    c.feed(sent("a", "app.slow", c.now), received("a", "app.slow", c.now))
    c.feed(heartbeat(WORKER, c.now, active=1))
    c.clock.advance(30)
    c.feed(heartbeat(WORKER, c.now, active=1))
    c.poll({"celery": 0})
    assert c.age() == 31


def test_a_task_an_idle_worker_prefetched_long_ago_has_started_unseen() -> None:
    c = Cluster()
    t0 = c.now
    c.feed(sent("a", "app.add", t0), received("a", "app.add", t0))
    c.feed(sent("e", "app.add", t0, eta=iso(t0 + 3600)), received("e", "app.add", t0))
    c.clock.advance(5)
    c.feed(heartbeat(WORKER, c.now, active=0))  # within the grace: events may still come
    c.tracker.expire()
    assert c.age() == 5
    c.clock.advance(15)
    c.feed(heartbeat(WORKER, c.now, active=0))  # a's task-started was lost
    c.tracker.expire()
    assert c.age() == 0
    assert len(c.tracker.queue_age) == 1  # e waits for its ETA, not for a slot


def test_a_worker_that_went_away_no_longer_holds_its_prefetched_tasks() -> None:
    c = Cluster(worker_timeout=60)
    c.feed(heartbeat(WORKER, c.now), sent("a", "app.slow", c.now), received("a", "app.slow", c.now))
    c.clock.advance(61)  # killed: no heartbeat, no worker-offline
    c.tracker.expire()
    assert c.age() == 61  # back in the broker (RabbitMQ requeues it): still waiting...
    c.clock.advance(5)
    c.poll({"celery": 0})  # ...until the broker reads the queue empty
    assert c.age() == 0


def test_a_clean_shutdown_gives_back_prefetched_tasks_at_once() -> None:
    c = Cluster()
    c.feed(heartbeat(WORKER, c.now), sent("a", "app.slow", c.now), received("a", "app.slow", c.now))
    c.feed(heartbeat(WORKER, c.now, kind="worker-offline"))
    c.tracker.expire()
    c.clock.advance(1)
    c.poll({"celery": 0})
    assert c.age() == 0


def test_a_stale_poll_is_no_evidence() -> None:
    c = Cluster()
    c.feed(sent("a", "app.add", c.now))
    c.clock.advance(10)
    c.evidence = None  # what the poller hands over once its reading is stale
    c.tracker.expire()
    assert c.age() == 10


def test_queues_the_poll_reads_are_reported_at_zero() -> None:
    c = Cluster()
    c.poll({"celery": 0, "idle": 0})
    assert c.age("idle") == 0


# ---- Redis: the oldest message in the broker ------------------------------------------


def test_redis_head_without_task_sent_is_a_lower_bound_from_first_sight() -> None:
    c = Cluster()
    first = c.now
    c.poll({"celery": 3}, {"celery": (head("m1", first),)})
    c.clock.advance(120)
    assert c.age() == 121


def test_redis_head_with_task_sent_gives_the_exact_age() -> None:
    c = Cluster()
    c.feed(sent("m1", "app.add", c.now - 500))  # the exporter saw it late: its send time counts
    c.poll({"celery": 1}, {"celery": (head("m1", c.now),)})
    assert c.age() == 501


def test_redis_head_corrects_events_of_tasks_that_left_the_broker() -> None:
    c = Cluster()
    c.feed(sent("gone", "app.add", c.now), sent("m1", "app.add", c.now + 50))
    c.clock.advance(100)
    c.evidence = BrokerEvidence(c.now, {"celery": 5}, {"celery": (head("m1", c.now),)})
    assert c.age() == 50  # "gone" is older than the oldest message: it is not in the broker


def test_redis_head_with_eta_ahead_does_not_count_and_an_expired_one_neither() -> None:
    c = Cluster()
    eta_ahead = BrokerHead("m1", "m1", c.now + 60, None, c.now - 10)
    expired = BrokerHead("m2", "m2", None, c.now - 1, c.now - 10)
    c.evidence = BrokerEvidence(
        c.now, {"celery": 2, "q2": 1}, {"celery": (eta_ahead,), "q2": (expired,)}
    )
    assert c.age() == 0
    assert c.age("q2") == 0
    c.clock.advance(70)
    assert c.age() == 10


def test_redis_oldest_of_priority_sub_lists_wins() -> None:
    c = Cluster()
    c.evidence = BrokerEvidence(
        c.now, {"celery": 2}, {"celery": (head("hi", c.now - 5), head("lo", c.now - 90))}
    )
    assert c.age() == 90


def test_redis_prefetched_task_that_left_unacked_has_started() -> None:
    c = Cluster()
    c.feed(heartbeat(WORKER, c.now), sent("a", "app.slow", c.now), received("a", "app.slow", c.now))
    c.feed(sent("b", "app.slow", c.now), received("b", "app.slow", c.now))
    c.clock.advance(30)
    c.poll({"celery": 0}, {"celery": ()}, frozenset({"b"}))  # a's task-started was lost
    c.clock.advance(10)
    assert c.age() == 41  # b, still prefetched
    assert len(c.tracker.queue_age) == 1


def test_redis_head_whose_events_were_pruned_is_kept_by_the_n_newest_rule() -> None:
    c = Cluster()
    c.feed(sent("low", "app.add", c.now), *(sent(f"h{i}", "app.add", c.now + 1) for i in range(3)))
    c.clock.advance(10)
    # One message left: the low-priority one, at the head of its sub-list.
    c.poll({"celery": 1}, {"celery": (head("low", c.now),)})
    assert c.age() == 11


# ---- the parts around it ----------------------------------------------------------------


def test_head_watch_keeps_first_sight_while_a_message_stays_at_the_head() -> None:
    watch = HeadWatch()
    one = BrokerHead("m1", "m1", None, None)
    assert watch.stamp({"q": (one,)}, 100.0)["q"][0].first_seen == 100.0
    assert watch.stamp({"q": (one,)}, 105.0)["q"][0].first_seen == 100.0
    two = BrokerHead("m2", "m2", None, None)
    assert watch.stamp({"q": (two,)}, 110.0)["q"][0].first_seen == 110.0
    assert watch.stamp({"q": (one,)}, 115.0)["q"][0].first_seen == 115.0  # forgotten meanwhile


def kombu_message(headers: dict[str, Any], tag: str = "tag-9") -> bytes:
    return json.dumps(
        {
            "body": "W1siYSJdLCB7fV0=",  # base64 args: never decoded
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {"delivery_tag": tag, "priority": 0},
        }
    ).encode()


def test_parse_head_reads_id_eta_and_expiry_from_headers() -> None:
    raw = kombu_message(
        {"id": "u1", "task": "app.add", "eta": "2026-01-01T00:00:00+00:00", "expires": None}
    )
    parsed = parse_head(raw)
    assert parsed == BrokerHead("u1", "u1", 1767225600.0, None)
    assert parse_head(kombu_message({})) == BrokerHead("tag-9", None, None, None)
    assert parse_head(b"not json") is None
    assert parse_head(None) is None
    assert parse_head(kombu_message({"id": "u2", "eta": "garbage"})) == BrokerHead(
        "u2", "u2", None, None
    )


def test_unacked_ids_come_from_the_message_headers() -> None:
    values = [
        json.dumps([json.loads(kombu_message({"id": "u1"})), "", "celery"]),
        json.dumps([{"body": ""}, "", "celery"]),
    ]
    ids: set[str] = set()
    assert RedisQueueProbe._unacked_routes(values, ids) == {("", "celery"): 2}
    assert ids == {"u1"}


def test_queue_age_hooks_alone() -> None:
    age = QueueAge(max_tasks=10, queue_expiry=60)
    age.sent("a", "q", 100.0, None, None, 100.0)
    age.received("a", "q", 100.0, None, None, "w@h", 101.0)
    down = WorkerView("w@h", "h", False, 100.0, 0, 0, None, True)
    age.prune(110.0, [down], BrokerEvidence(111.0, {"q": 0}))
    assert age.ages(112.0, None) == {"q": 0.0}
    age.prune(200.0, [], None)  # an empty queue is forgotten after queue_expiry
    assert age.ages(200.0, None) == {}


class HeadProbe(QueueProbe):
    """A Redis-like probe whose oldest message is scripted; raises while `down`."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[BrokerHead, ...]] = {}
        self.down = False

    def read(self, queues: Sequence[str]) -> QueueReading:
        if self.down:
            raise ProbeError("ConnectionError: refused")
        lengths = {q: len(self.heads.get(q, ())) for q in queues}
        heads = {q: self.heads.get(q, ()) for q in queues}
        return QueueReading(lengths, heads=heads, unacked_ids=frozenset())

    def close(self) -> None:
        pass


def test_poller_hands_over_fresh_evidence_with_first_sight_of_each_head() -> None:
    clock = FakeClock(1000.0)
    config = Config(broker_url="redis://", queues=("q",), queue_poll_interval=5, broker_timeout=3)
    probe = HeadProbe()
    poller = QueuePoller(config, Celery(set_as_current=False), clock, probe=probe, inspector=None)
    assert poller.queue_evidence() is None  # nothing polled yet
    probe.heads = {"q": (BrokerHead("m1", "m1", None, None),)}
    poller.poll_queues()
    clock.advance(5)
    poller.poll_queues()
    evidence = poller.queue_evidence()
    assert evidence is not None and evidence.read_at == 1005.0
    assert evidence.heads is not None and evidence.heads["q"][0].first_seen == 1000.0
    assert evidence.lengths == {"q": 1} and evidence.unacked_ids == frozenset()
    probe.down = True
    clock.advance(5)
    poller.poll_queues()
    assert poller.queue_evidence() is evidence  # one failed poll: the last reading still holds
    clock.advance(10)  # past two intervals and the timeout: stale
    assert poller.queue_evidence() is None


def test_past_the_cap_the_oldest_tenth_is_forgotten_at_once() -> None:
    age = QueueAge(max_tasks=100, queue_expiry=60)
    for i in range(101):
        age.sent(f"t{i}", "q", 1000.0 + i, None, None, 1000.0 + i)
    assert len(age) == 90
    assert age.ages(1200.0, None) == {"q": 1200.0 - 1011.0}


def test_redis_a_dead_workers_unacked_task_waits_until_it_runs_elsewhere() -> None:
    c = Cluster(worker_timeout=60)
    c.feed(heartbeat(WORKER, c.now), sent("a", "app.slow", c.now), received("a", "app.slow", c.now))
    c.clock.advance(61)  # SIGKILLed: kombu's unacked hash keeps the message for an hour
    c.poll({"celery": 0}, {"celery": ()}, frozenset({"a"}))
    assert c.age() == 62  # not held by a live worker, not in the list, but it will run
    c.clock.advance(10)
    c.poll({"celery": 0}, {"celery": ()}, frozenset())  # restored and started elsewhere
    assert c.age() == 0
