"""Load generator: publishes the synthetic event stream to a real broker as Celery does.

Messages from `bench.stream.EventStream` go out through a kombu Producer on Celery's own event
exchange (`celery.events.event.get_exchange`: topic on AMQP, fanout on Redis), with the
routing key, `hostname` header, serializer and delivery mode that
`celery.events.dispatcher.EventDispatcher._publish` uses, from several processes, at a fixed
rate or as fast as possible.

    python -m bench.loadgen --broker-url redis://127.0.0.1:6379/0 --events 100000 --processes 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench.stream import BATCH_LIMIT, EventStream, Message, StreamSpec, event_types, take

PIPELINE = 100  # messages per Redis pipeline round trip


@dataclass(frozen=True)
class PublishJob:
    broker_url: str
    spec: StreamSpec
    events: int | None = None  # stop after this many events ...
    duration: float | None = None  # ... or after this many seconds, whichever comes first
    rate: float | None = None  # events/s for this process; None is as fast as it goes
    start_at: float = 0.0  # wall-clock time.time() to begin, so processes start together


@dataclass
class PublishReport:
    events: int = 0
    messages: int = 0
    seconds: float = 0.0
    by_type: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: PublishReport) -> None:
        self.events += other.events
        self.messages += other.messages
        self.seconds = max(self.seconds, other.seconds)
        self.by_type.update(other.by_type)


def publish_message(producer: Any, exchange: str, message: Message) -> None:
    """Publish one event message the way Celery's EventDispatcher does."""
    producer.publish(
        message.body,
        routing_key=message.routing_key,
        exchange=exchange,
        serializer="json",
        headers={"hostname": message.hostname},
        delivery_mode=1,
    )


def run_job(job: PublishJob) -> PublishReport:
    """Publish one process's share. Also the multiprocessing entry point."""
    from celery.events.event import get_exchange
    from kombu.connection import Connection
    from kombu.messaging import Producer

    report = PublishReport()
    with Connection(job.broker_url) as conn:
        conn.ensure_connection(max_retries=3)
        exchange = get_exchange(conn)
        channel = conn.default_channel
        exchange(channel).declare()
        producer = Producer(channel, exchange=exchange, serializer="json", auto_declare=False)
        stream = EventStream(job.spec)
        if job.start_at:
            time.sleep(max(0.0, job.start_at - time.time()))
        started = time.monotonic()
        deadline = started + job.duration if job.duration else None
        body = stream.messages()
        limited = take(body, job.events) if job.events is not None else body

        def send(message: Message) -> None:
            publish_message(producer, exchange.name, message)
            report.events += message.events
            report.messages += 1
            report.by_type.update(event_types(message))

        # kombu pipelines the publishes on Redis (a no-op elsewhere); without it one Python
        # process cannot publish faster than the consumers under test can read.
        with producer.batch(max_size=PIPELINE) as batch:
            for message in limited:
                send(message)
                if job.rate:
                    ahead = report.events / job.rate - (time.monotonic() - started)
                    if ahead > 0.002:
                        batch.flush()
                        time.sleep(ahead)
                if deadline is not None and time.monotonic() >= deadline:
                    break
            if job.events is None:
                # A fixed event count is exact without them: buffered events were never counted.
                for message in stream.closing_messages():
                    send(message)
        report.seconds = time.monotonic() - started
    return report


def split_jobs(
    broker_url: str,
    spec: StreamSpec,
    processes: int,
    events: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    start_delay: float = 0.0,
) -> list[PublishJob]:
    """One job per process; events and rate divided so the totals are exact."""
    start_at = time.time() + start_delay if start_delay else 0.0
    jobs = []
    for index in range(processes):
        share = None
        if events is not None:
            share = events // processes + (1 if index < events % processes else 0)
        jobs.append(
            PublishJob(
                broker_url,
                spec.share(index, processes),
                share,
                duration,
                rate / processes if rate else None,
                start_at,
            )
        )
    return jobs


def publish(jobs: Sequence[PublishJob]) -> PublishReport:
    """Run the jobs, one process each (spawned: no broker connection crosses a fork)."""
    total = PublishReport()
    if len(jobs) == 1:
        total.merge(run_job(jobs[0]))
        return total
    # A pool that fails to start raises here instead of respawning its workers forever.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(jobs), mp_context=ctx) as pool:
        for report in pool.map(run_job, jobs):
            total.merge(report)
    return total


def spec_from_args(args: argparse.Namespace) -> StreamSpec:
    return StreamSpec(
        task_names=tuple(f"{args.task_prefix}{i:04d}" for i in range(args.task_names)),
        workers=tuple(f"celery@{args.worker_prefix}{i:04d}" for i in range(args.workers)),
        queues=tuple(q for q in args.queues.split(",") if q),
        batch_max=args.batch_max,
        fail_ratio=args.fail_ratio,
        retry_ratio=args.retry_ratio,
        task_sent=not args.no_task_sent,
        seed=args.seed,
    )


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-names", type=int, default=20, help="distinct task names")
    parser.add_argument("--task-prefix", default="bench.tasks.t")
    parser.add_argument("--workers", type=int, default=10, help="distinct worker nodes")
    parser.add_argument("--worker-prefix", default="bench-")
    parser.add_argument("--queues", default="celery,priority,reports")
    parser.add_argument("--batch-max", type=int, default=BATCH_LIMIT)
    parser.add_argument("--fail-ratio", type=float, default=0.05)
    parser.add_argument("--retry-ratio", type=float, default=0.03)
    parser.add_argument("--no-task-sent", action="store_true", help="producers send no task-sent")
    parser.add_argument("--seed", type=int, default=int(time.time()))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--events", type=int, help="total events to publish")
    parser.add_argument("--duration", type=float, help="seconds to publish for")
    parser.add_argument("--rate", type=float, help="events/s in total (default: max speed)")
    parser.add_argument("--processes", type=int, default=2)
    add_stream_arguments(parser)
    args = parser.parse_args(argv)
    if args.events is None and args.duration is None:
        parser.error("give --events or --duration")
    jobs = split_jobs(
        args.broker_url,
        spec_from_args(args),
        args.processes,
        args.events,
        args.duration,
        args.rate,
        start_delay=1.0 if args.processes > 1 else 0.0,
    )
    report = publish(jobs)
    print(
        json.dumps(
            {
                "events": report.events,
                "messages": report.messages,
                "seconds": round(report.seconds, 3),
                "rate": round(report.rate),
                "by_type": dict(report.by_type),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
