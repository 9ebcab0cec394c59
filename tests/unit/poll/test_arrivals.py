"""Newly appeared workers, with a fake clock and scripted events: who is asked when (retries,
batches, bounds), and the tracker holding a new worker's task events until its queues are
known, so that no exposed counter ever moves."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from types import MappingProxyType

import pytest
from celery import Celery

from celery_exporter.config import Config
from celery_exporter.poll.arrivals import (
    BATCH,
    COALESCE,
    RETRY_DELAYS,
    ArrivalAsker,
    WorkerArrivals,
    WorkerQueues,
)
from celery_exporter.poll.inspection import WorkerStats
from celery_exporter.poll.poller import QueuePoller
from celery_exporter.poll.queue_probe import ProbeError
from celery_exporter.state.deferred_events import DEFER_SECONDS
from tests.support.eventscript import (
    WORKER,
    FakeClock,
    Harness,
    failed,
    heartbeat,
    received,
    started,
    succeeded,
)

T0 = 1_700_000_000.0
NEW = "celery@new-pod"
LABELS = {"hostname": "new-pod"}


class ScriptedAsker:
    """Answers for the workers in `answers` that are `listening`; records every request."""

    def __init__(self, answers: dict[str, tuple[str, ...]]) -> None:
        self.answers = answers
        self.listening: set[str] = set(answers)
        self.down = False
        self.requests: list[tuple[str, ...]] = []

    def ask(self, nodes: Sequence[str]) -> dict[str, tuple[str, ...]]:
        self.requests.append(tuple(nodes))
        if self.down:
            raise ProbeError("ConnectionError: refused")
        # A stray reply from a worker nobody asked must not be taken.
        replies: dict[str, tuple[str, ...]] = {"celery@stranger": ("other",)}
        replies.update({n: self.answers[n] for n in nodes if n in self.listening})
        return replies


class Cluster:
    """A tracker and the asker side wired as app.py wires them, on one fake clock."""

    def __init__(self, answers: dict[str, tuple[str, ...]]) -> None:
        self.arrivals = WorkerArrivals(lambda: self.h.clock.now, max_pending=100)
        self.h = Harness(arrivals=self.arrivals)
        self.asker = ScriptedAsker(answers)
        self.learned: list[WorkerQueues] = []
        self.ask = ArrivalAsker(self.arrivals, self.asker, self._learned)

    def _learned(self, answers: WorkerQueues) -> None:
        self.learned.append(answers)
        self.h.queues.update(answers)

    def run_asker(self, seconds: float, step: float = 0.05) -> None:
        """Let the asker thread's work happen over `seconds` of fake time."""
        end = self.h.clock.now + seconds
        while self.h.clock.now < end:
            self.ask.ask_due()
            self.h.clock.advance(step)
        self.ask.ask_due()

    def tasks(self, *uuids: str, hostname: str = NEW) -> None:
        for uuid in uuids:
            self.h.feed(received(uuid, "app.add", T0, hostname=hostname))
            self.h.feed(started(uuid, T0, hostname=hostname))
            self.h.feed(succeeded(uuid, T0, hostname=hostname))

    def counted(self, queue: str, kind: str = "succeeded") -> float | None:
        return self.h.task(kind, "app.add", hostname="new-pod", queue=queue)


# ---- who is asked, when -------------------------------------------------------------------


def test_a_new_worker_is_asked_alone_at_once_and_settled_when_it_answers() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.queues[WORKER] = ("celery",)  # the old worker is known; only the new one is asked
    c.h.feed(heartbeat(WORKER, T0), heartbeat(NEW, T0, kind="worker-online"))
    assert c.asker.requests == []  # not from the event thread
    c.run_asker(COALESCE)
    assert c.asker.requests == [(NEW,)]
    assert c.learned == [{NEW: ("q2",)}]  # the stranger's reply is not taken
    assert c.arrivals.waiting() == 0
    assert c.arrivals.settled() == [NEW]


def test_a_known_worker_is_not_asked_and_no_request_is_a_broadcast() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.queues[WORKER] = ("celery",)  # from the regular inspect round
    c.h.feed(heartbeat(WORKER, T0))  # first heartbeat this exporter sees, queues known
    c.h.feed(heartbeat(NEW, T0))  # first heartbeat of a node not seen before
    c.h.feed(heartbeat(NEW, T0 + 2))  # not new any more
    c.run_asker(1.0)
    assert c.asker.requests == [(NEW,)]


def test_the_first_heartbeat_after_task_events_still_asks() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.feed(received("u1", "app.add", T0, hostname=NEW))  # the exporter started mid-task
    c.h.feed(heartbeat(NEW, T0))
    c.run_asker(COALESCE)
    assert c.asker.requests == [(NEW,)]


def test_worker_online_asks_again_even_when_the_name_is_known() -> None:
    c = Cluster({NEW: ("q3",)})
    c.h.queues[NEW] = ("q2",)  # before a restart under the same name
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.run_asker(COALESCE)
    assert c.asker.requests == [(NEW,)]
    assert c.h.queues[NEW] == ("q3",)


def test_a_silent_worker_is_retried_with_backoff_then_left_to_the_regular_round(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    c = Cluster({NEW: ("q2",)})
    c.asker.listening.clear()
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    asked_at = []
    end = c.h.clock.now + 10
    while c.h.clock.now < end:
        before = len(c.asker.requests)
        c.ask.ask_due()
        if len(c.asker.requests) > before:
            asked_at.append(round(c.h.clock.now - T0 - COALESCE, 2) + 0.0)
        c.h.clock.advance(0.01)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(asked_at)]
    assert asked_at[0] == 0.0
    assert gaps == pytest.approx(list(RETRY_DELAYS), abs=0.015)  # 10 ms steps of fake time
    assert c.arrivals.waiting() == 0
    assert c.arrivals.settled() == [NEW]
    assert f"worker {NEW} did not answer active_queues after 4 tries" in caplog.text


def test_a_broker_error_counts_as_no_answer() -> None:
    c = Cluster({NEW: ("q2",)})
    c.asker.down = True
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.run_asker(COALESCE)
    c.asker.down = False
    c.run_asker(RETRY_DELAYS[0])
    assert c.asker.requests == [(NEW,), (NEW,)]
    assert c.learned == [{NEW: ("q2",)}]


def test_workers_joining_together_share_requests_and_the_backlog_is_bounded() -> None:
    nodes = [f"celery@pod-{i}" for i in range(150)]
    c = Cluster(dict.fromkeys(nodes, ("q",)))
    c.arrivals.max_pending = 120
    for node in nodes:
        c.h.feed(heartbeat(node, T0, kind="worker-online"))
    c.run_asker(1.0)
    # 120 waited (the other 30 are left to the regular round), asked BATCH at a time.
    assert [len(r) for r in c.asker.requests] == [BATCH, 120 - BATCH]
    assert sum(len(a) for a in c.learned) == 120


def test_coming_online_again_during_a_request_starts_a_fresh_set_of_tries() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.h.clock.advance(COALESCE)
    nodes, _ = c.arrivals.due()  # the request is in flight...
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))  # ...when it restarts
    assert c.arrivals.finished(nodes, {NEW: ("old",)}) == []
    assert c.arrivals.settled() == []  # the old incarnation's answer settles nothing
    c.run_asker(COALESCE)
    assert c.arrivals.settled() == [NEW]


# ---- holding a new worker's task events -----------------------------------------------------


def test_tasks_before_the_answer_are_held_then_counted_under_the_right_queue() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.tasks("u1", "u2")
    c.h.feed([failed("u3", T0, hostname=NEW)])  # a task.multi batch is held event by event
    # Held, so nothing is exposed yet: not under the fallback queue, not anywhere.
    assert c.counted("celery") is None and c.counted("q2") is None
    assert c.h.value("celery_exporter_events_total", event="task-received") is None
    c.run_asker(COALESCE)
    c.h.tracker.release_deferred()  # the event thread, between messages
    assert c.counted("q2") == 2
    assert c.counted("q2", "received") == 2
    assert (
        c.h.value(
            "celery_task_failed_total",
            name="unknown",
            exception="ValueError",
            queue_name="q2",
            **LABELS,
        )
        == 1
    )
    assert c.counted("celery") is None
    c.tasks("u4")  # after the answer: counted at once
    assert c.counted("q2") == 3


def test_a_worker_that_never_answers_is_counted_after_the_hold_under_todays_rule() -> None:
    c = Cluster({NEW: ("q2",)})
    c.asker.listening.clear()
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.tasks("u1")
    c.h.clock.advance(DEFER_SECONDS - 0.01)
    c.h.tracker.release_deferred()
    assert c.counted("celery") is None
    c.h.clock.advance(0.01)
    c.h.tracker.release_deferred()
    assert c.counted("celery") == 1  # --default-queue-name, as without the asker
    c.tasks("u2")
    assert c.counted("celery") == 2


def test_held_events_are_released_by_the_next_message_too() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.tasks("u1")
    c.run_asker(COALESCE)
    c.h.feed(heartbeat(WORKER, T0))  # any message: held events first, in order
    assert c.counted("q2") == 1


def test_the_hold_is_bounded_in_count() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.tracker._deferred.max_events = 9
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.tasks("u1", "u2")
    assert c.counted("celery") is None  # 6 held
    c.tasks("u3")  # the 9th: everything held is counted now, with what is known (nothing)
    assert c.counted("celery") == 3
    assert not c.h.tracker._deferred.nodes


def test_held_events_keep_no_args_kwargs_results_or_tracebacks() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    secret = "hunter2"
    task = received("u1", "app.add", T0, hostname=NEW)
    task["args"] = f"('{secret}',)"
    c.h.feed(task)
    c.h.feed(failed("u1", T0, exception=f"ValueError('{secret}')", hostname=NEW))
    kept = [event for hold in c.h.tracker._deferred.nodes.values() for event, _ in hold.events]
    assert len(kept) == 2
    assert secret not in repr(kept)
    assert all({"args", "kwargs", "traceback", "result"}.isdisjoint(e) for e in kept)


def test_without_inspect_nothing_is_held() -> None:
    h = Harness()  # no arrivals: --inspect-interval 0
    h.feed(heartbeat(NEW, T0, kind="worker-online"), received("u1", "app.add", T0, hostname=NEW))
    assert h.task("received", "app.add", hostname="new-pod", queue="celery") == 1


def test_other_workers_are_counted_at_once_while_one_is_held() -> None:
    c = Cluster({NEW: ("q2",)})
    c.h.feed(heartbeat(NEW, T0, kind="worker-online"))
    c.h.feed(received("u9", "app.add", T0))
    assert c.h.task("received", "app.add") == 1


# ---- the poller keeps what new workers answered ------------------------------------------------


class NoProbe:
    supports_length = True
    driver = "redis"


def test_answers_are_used_at_once_and_kept_until_a_round_covers_them() -> None:
    clock = FakeClock(1000.0)
    cfg = Config(broker_url="redis://localhost", inspect_interval=30.0)
    round_result = {"celery@old": WorkerStats(node="celery@old", queues=("celery",))}

    class Round:
        def round(self) -> dict[str, WorkerStats]:
            return dict(round_result)

    poller = QueuePoller(
        cfg, Celery(set_as_current=False), clock, probe=NoProbe(), inspector=Round(),  # type: ignore[arg-type]
        arrivals=WorkerArrivals(clock), queue_asker=ScriptedAsker({}),
    )  # fmt: skip
    assert poller.arrival_asker is not None
    poller.inspect_workers()
    poller.learned_queues({NEW: ("q2",)})
    assert poller.worker_queues() == {"celery@old": ("celery",), NEW: ("q2",)}
    assert isinstance(poller.worker_queues(), MappingProxyType)
    assert "q2" in poller.known_queues()  # its queue is polled from now on
    clock.now += 30
    poller.inspect_workers()  # the new worker did not answer this round in time
    assert poller.worker_queues()[NEW] == ("q2",)
    round_result[NEW] = WorkerStats(node=NEW)  # it answered `stats` but not `active_queues`
    clock.now += 30
    poller.inspect_workers()
    assert poller.worker_queues()[NEW] == ("q2",)
    round_result[NEW] = WorkerStats(node=NEW, queues=("q2", "q3"))
    clock.now += 30
    poller.inspect_workers()
    assert poller.worker_queues()[NEW] == ("q2", "q3")
    del round_result[NEW]
    clock.now += 30
    poller.inspect_workers()  # gone: the asked answer does not bring it back
    assert NEW not in poller.worker_queues()


def test_inspect_off_means_no_asking() -> None:
    cfg = Config(broker_url="redis://localhost", inspect_interval=0.0)
    poller = QueuePoller(
        cfg, Celery(set_as_current=False), FakeClock(), probe=NoProbe(),  # type: ignore[arg-type]
        arrivals=WorkerArrivals(FakeClock()),
    )  # fmt: skip
    assert poller.arrival_asker is None
