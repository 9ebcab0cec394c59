"""Poll mode of the bench runner (`python -m bench.run poll`): one broker queue poll, 100 queues
with priorities on Redis, 100 on RabbitMQ.

Starts its own servers on free ports (stopped by PID at the end), fills every queue, then times
`QueuePoller.poll_queues()` (the whole poll: probe, bookkeeping) and one scrape of the collector.
Prints the median and 90th percentile over --polls polls. In the calling thread.

    python -m bench.run poll [--queues 100] [--polls 50] [--brokers redis]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from bench.phases import broker_server
from celery_exporter.config import Config
from celery_exporter.exposition.catalogue import FamilyFactory
from celery_exporter.exposition.poll_collector import PollCollector
from celery_exporter.poll.poller import QueuePoller


def timings(action: Callable[[], object], runs: int) -> list[float]:
    result = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        result.append((time.perf_counter() - started) * 1000)
    return result


def fill(url: str, queues: list[str], per_queue: int, priorities: bool) -> None:
    app = Celery("bench-fill", broker=url, set_as_current=False)
    with app.producer_or_acquire() as producer:
        for queue in queues:
            for n in range(per_queue):
                app.send_task(
                    "workload.add",
                    (n, n),
                    queue=queue,
                    priority=(n * 3) % 10 if priorities else None,
                    producer=producer,
                )
    app.close()


def bench(url: str, count: int, polls: int, priorities: bool) -> dict[str, float]:
    queues = [f"bench-{i:03d}" for i in range(count)]
    fill(url, queues, per_queue=4, priorities=priorities)
    config = Config(broker_url=url, queues=tuple(queues), inspect_interval=0)
    app = Celery("bench", set_as_current=False)
    app.conf.update(broker_url=url, broker_connection_timeout=config.broker_timeout)
    poller = QueuePoller(config, app)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PollCollector(poller, FamilyFactory()))
    try:
        poller.poll_queues()  # connect once, as the poll thread does on its first round
        total = registry.get_sample_value("celery_queue_length", {"queue_name": queues[0]})
        assert total == 4, f"expected 4 messages in {queues[0]}, read {total}"
        poll = timings(poller.poll_queues, polls)
        scrape = timings(lambda: generate_latest(registry), polls)
    finally:
        poller.stop()
        app.close()
    return {
        "poll_median": statistics.median(poll),
        "poll_p90": statistics.quantiles(poll, n=10)[-1],
        "scrape_median": statistics.median(scrape),
    }


@dataclass
class Settings:
    brokers: tuple[str, ...]
    queues: int
    polls: int


LABELS = {"redis": "redis (4 priority lists each)", "rabbitmq": "rabbitmq"}


def run(s: Settings) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="poll-bench-") as tmp:
        for name in s.brokers:
            with broker_server(name, Path(tmp) / name) as broker:
                rows[name] = bench(broker.url, s.queues, s.polls, name == "redis")
    print(f"{s.queues} queues, 4 messages each, {s.polls} polls")
    print(f"{'transport':32} {'poll median ms':>15} {'poll p90 ms':>12} {'scrape median ms':>17}")
    for name, row in rows.items():
        print(
            f"{LABELS[name]:32} {row['poll_median']:15.2f} {row['poll_p90']:12.2f}"
            f" {row['scrape_median']:17.2f}"
        )
    return rows
