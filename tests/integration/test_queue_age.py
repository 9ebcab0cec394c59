"""celery_queue_oldest_task_age_seconds from the real exporter, real brokers and real workers.

The age is compared with the wall clock since the test sent the tasks: the exporter times a
task by its task-sent event (the producer is this process, so the same clock), or on Redis
without task-sent events from when it first saw the message at the head of the list.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from celery import Celery

from celery_exporter.poll.redis_queues import RedisQueueProbe
from tests.support.exporter_process import ExporterFactory, ExporterProcess
from tests.support.producer import producer, send
from tests.support.servers import RabbitMQServer, WorkerFactory, wait_for

pytestmark = pytest.mark.integration

AGE = "celery_queue_oldest_task_age_seconds"
# Seconds between the scrape's clock and ours, both ways (a scrape is not instantaneous).
SLACK = 1.0


def start_exporter(factory: ExporterFactory, url: str, queue: str) -> ExporterProcess:
    exporter = factory(url, "-Q", queue, "--queue-poll-interval", "1", "--inspect-interval", "0")
    exporter.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1)
    return exporter


def age_of(exporter: ExporterProcess, queue: str) -> float | None:
    return exporter.value(AGE, queue_name=queue)


def wait_age(
    exporter: ExporterProcess,
    queue: str,
    predicate: Callable[[float | None], bool],
    timeout: float = 20.0,
) -> float:
    value = exporter.wait_value(AGE, {"queue_name": queue}, predicate, timeout)
    assert value is not None
    return value


def wait_events(exporter: ExporterProcess, kind: str, task: str, count: int = 1) -> None:
    """Until `count` task-`kind` events of `task` were counted, whatever their queue_name: a
    producer's first task-sent can arrive after the worker's events, which then carry the
    queue the exporter could resolve without it (docs/metrics.md)."""

    def counted() -> bool:
        samples = exporter.scrape()
        name = f"celery_task_{kind}_total"
        total = sum(
            v for (n, labels), v in samples.items() if n == name and ("name", task) in labels
        )
        return total >= count

    wait_for(counted, 30.0, f"{count} task-{kind} of {task}\n{exporter.log[-2000:]}")


def purge(app: Celery, queue: str) -> None:
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def test_unconsumed_queue_age_follows_the_clock_and_reads_zero_after_a_purge(
    broker_url: str, exporter_factory: ExporterFactory, unique_name: str
) -> None:
    queue = f"stuck-{unique_name}"
    exporter = start_exporter(exporter_factory, broker_url, queue)
    assert wait_age(exporter, queue, lambda v: v == 0) == 0  # -Q queue, nothing waits yet
    app = producer(broker_url)
    sent_at = time.time()
    send(app, "workload.add", queue, times=3, args=(1, 2))
    wait_age(exporter, queue, lambda v: v is not None and v > 0)
    # Still stuck three seconds later: the age has grown with the clock.
    age = wait_age(exporter, queue, lambda v: v is not None and v >= 3.0)
    elapsed = time.time() - sent_at
    assert elapsed - SLACK <= age <= elapsed + SLACK
    purge(app, queue)
    wait_age(exporter, queue, lambda v: v == 0)
    assert age_of(exporter, queue) == 0


def test_redis_without_task_sent_events_the_head_gives_a_lower_bound_until_drained(
    redis_url: str,
    exporter_factory: ExporterFactory,
    worker_factory: WorkerFactory,
    unique_name: str,
) -> None:
    queue = f"nosent-{unique_name}"
    exporter = start_exporter(exporter_factory, redis_url, queue)
    app = producer(redis_url, sent_events=False)
    sent_at = time.time()
    send(app, "workload.add", queue, times=2, args=(1, 2))
    first = wait_age(exporter, queue, lambda v: v is not None and v > 0)
    later = wait_age(exporter, queue, lambda v: v is not None and v >= first + 2.0)
    assert later <= time.time() - sent_at + SLACK  # a lower bound: never more than the truth
    assert not any(name == "celery_task_sent_total" for name, _ in exporter.scrape())
    worker_factory(redis_url, queues=(queue,))
    wait_age(exporter, queue, lambda v: v == 0, timeout=30)


def test_tasks_behind_a_worker_busy_on_a_long_task_wait_and_count(
    broker_url: str,
    exporter_factory: ExporterFactory,
    worker_factory: WorkerFactory,
    unique_name: str,
) -> None:
    queue = f"busy-{unique_name}"
    exporter = start_exporter(exporter_factory, broker_url, queue)
    worker_factory(
        broker_url, queues=(queue,), env={"CE_TEST_PREFETCH_MULTIPLIER": "1"}, concurrency=1
    )
    app = producer(broker_url)
    send(app, "workload.sleep", queue, args=(8,))
    wait_events(exporter, "started", "workload.sleep")
    sent_at = time.time()
    send(app, "workload.add", queue, times=3, args=(1, 2))  # one prefetched, two in the broker
    age = wait_age(exporter, queue, lambda v: v is not None and v >= 3.0)
    elapsed = time.time() - sent_at
    assert elapsed - SLACK <= age <= elapsed + SLACK
    # The long task ends, the short ones run, nothing waits any more.
    wait_age(exporter, queue, lambda v: v == 0, timeout=30)


def test_redis_head_is_the_message_kombu_pops_next_in_every_priority_sub_list(
    redis_url: str,
) -> None:
    app = Celery("heads", broker=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"global_keyprefix": "tenant:"}
    probe = RedisQueueProbe(app, timeout=2.0)
    try:
        for task_id in ("a", "b", "c"):
            app.send_task("workload.add", (1, 2), queue="hq", task_id=task_id)
        app.send_task("workload.add", (1, 2), queue="hq", task_id="low", priority=9)
        app.send_task("workload.add", (1, 2), queue="hq", task_id="later", countdown=600)
        reading = probe.read(["hq"])
        assert reading.heads is not None
        assert [h.task_id for h in reading.heads["hq"]] == ["a", "low"]
        with app.connection_for_read() as conn:
            popped = conn.SimpleQueue("hq").get(timeout=2)
            assert popped.headers["id"] == "a"  # kombu took the message we called oldest
            popped.ack()
        reading = probe.read(["hq"])
        assert reading.heads is not None
        assert [h.task_id for h in reading.heads["hq"]] == ["b", "low"]
        assert reading.lengths["hq"] == 4
        sent_at = time.time()
        app.send_task("workload.add", (1, 2), queue="eq", task_id="e", countdown=600, expires=900)
        reading = probe.read(["eq"])
        assert reading.heads is not None
        (head,) = reading.heads["eq"]
        assert head.eta is not None and abs(head.eta - (sent_at + 600)) < 5
        assert head.expires is not None and abs(head.expires - (sent_at + 900)) < 5
    finally:
        probe.close()
        app.close()


def test_rabbitmq_a_killed_worker_no_longer_holds_its_prefetched_task(
    rabbitmq_server: RabbitMQServer,
    exporter_factory: ExporterFactory,
    worker_factory: WorkerFactory,
    unique_name: str,
) -> None:
    url = rabbitmq_server.url
    queue = f"killed-{unique_name}"
    exporter = exporter_factory(
        url, "-Q", queue, "--queue-poll-interval", "1", "--inspect-interval", "0",
        "--worker-timeout", "3",
    )  # fmt: skip
    exporter.wait_value("celery_exporter_broker_up", {}, lambda v: v == 1)
    worker = worker_factory(
        url, queues=(queue,), env={"CE_TEST_PREFETCH_MULTIPLIER": "1"}, concurrency=1
    )
    app = producer(url)
    send(app, "workload.sleep", queue, args=(60,))
    wait_events(exporter, "started", "workload.sleep")
    send(app, "workload.add", queue, args=(1, 2))
    wait_events(exporter, "received", "workload.add")
    worker.kill()  # RabbitMQ requeues the prefetched add; the running sleep was acked
    worker_labels = {"hostname": worker.hostname.split("@")[1], "worker": worker.hostname}
    exporter.wait_value("celery_worker_up", worker_labels, lambda v: v == 0, timeout=30)
    wait_age(exporter, queue, lambda v: v is not None and v >= 5.0)  # it still waits
    purge(app, queue)
    # Held by a worker that is gone, and not in the queue: nothing waits (after the next
    # poll and the housekeeping pass that follows it, every 5 s).
    wait_age(exporter, queue, lambda v: v == 0, timeout=40)
