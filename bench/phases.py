"""The benchmark's measurements, each against one running consumer on one real broker.

Every phase is bounded in time and returns plain numbers; each mode of `bench.run` orders the
phases, starts and stops the servers (`broker_server`) and consumers, and prints its table.
Event counts are exact (the generator publishes exactly N events), so "lost" is published
minus counted.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from tests.support.servers import RabbitMQServer, RedisServer

from .consumers import ConsumerProcess, count_samples
from .loadgen import PublishReport, publish_message, split_jobs
from .loadgen import publish as publish_jobs
from .stream import EventStream, Message, StreamSpec

REDIS_PUBSUB_DEFAULT = "pubsub 33554432 8388608 60"
REDIS_PUBSUB_UNLIMITED = "pubsub 0 0 0"


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Broker:
    """A running broker as the phases need it: URL, and a way to set Redis's pub/sub limit."""

    name: str
    url: str
    redis_port: int | None = None

    def set_pubsub_limit(self, value: str) -> None:
        """On Redis, the limit past which the server drops a slow subscriber (and its
        buffered events). No-op on RabbitMQ, whose event queues drop messages by TTL."""
        if self.redis_port is None:
            return
        import redis

        client = redis.Redis(port=self.redis_port)
        try:
            client.config_set("client-output-buffer-limit", value)
        finally:
            client.close()


@contextlib.contextmanager
def broker_server(name: str, tmp: Path) -> Iterator[Broker]:
    """A fresh Redis or RabbitMQ on a free loopback port (the test suite's starters, shared
    helpers in tests/support), stopped by PID on the way out."""
    if name == "redis":
        redis = RedisServer.start(tmp / "redis")
        try:
            yield Broker("redis", redis.url, redis_port=redis.port)
        finally:
            redis.stop()
    elif name == "rabbitmq":
        rabbit = RabbitMQServer.start(tmp / "rabbitmq")
        try:
            yield Broker("rabbitmq", rabbit.url)
        finally:
            rabbit.stop()
    else:
        raise ValueError(f"unknown broker {name!r}")


@dataclass
class Options:
    processes: int = 2  # publisher processes for backlogs
    live_processes: int = 1  # publisher processes during live-rate trials
    spec: StreamSpec = field(default_factory=StreamSpec)


def publish(
    broker: Broker, opts: Options, events: int, procs: int = 0, workers_known: bool = False
) -> PublishReport:
    """`workers_known`: the stream's workers are already online (the warm-up announced them),
    so it starts with no worker-online; else every worker says hello first, which makes the
    exporter ask it for its queues and hold its first task events (state/deferred_events.py)."""
    spec = replace(
        opts.spec, seed=time.monotonic_ns() % 1_000_000, online_at_start=not workers_known
    )
    return publish_jobs(split_jobs(broker.url, spec, procs or opts.processes, events=events))


def publish_backlog(broker: Broker, opts: Options, events: int) -> PublishReport:
    """A drain's backlog: a steady stream. Workers that restarted every drain would measure
    the hold of new workers' task events (at most 6 s per arrival), not the ingest path."""
    return publish(broker, opts, events, workers_known=True)


@dataclass
class WaitResult:
    counted: int
    seconds: float
    scrape_seconds: list[float]
    complete: bool


def wait_count(
    consumer: ConsumerProcess,
    target: int,
    timeout: float,
    stall: float = 15.0,
    interval: float = 0.25,
    started: float | None = None,
    wall_started: float | None = None,
) -> WaitResult:
    """Poll the consumer's count until it reaches `target`. The finish time is the consumer's
    own time of its last event when it reports one (so polls can be sparse: each scrape
    costs the exporter CPU), else interpolated between the last two polls."""
    started = time.monotonic() if started is None else started
    scrapes: list[float] = []
    last_count = -1
    prev_count, prev_time = 0, started
    progress_at = started
    if wall_started is not None:
        time.sleep(interval)  # a scrape at once would only slow the drain it measures
    while True:
        try:
            text, took = consumer.fetch()
        except OSError:  # no answer in time (Flower, busy draining): that is a data point
            scrapes.append(math.inf)
            if time.monotonic() - started > timeout:
                return WaitResult(max(last_count, 0), time.monotonic() - started, scrapes, False)
            continue
        now = time.monotonic()
        scrapes.append(took)
        count = consumer.count_from(text)
        if count >= target:
            last_event = consumer.last_event_from(text)
            if wall_started is not None and last_event is not None:
                return WaitResult(count, max(last_event - wall_started, 1e-3), scrapes, True)
            recent = (count - prev_count) / max(now - prev_time, 1e-9)
            finish = prev_time + (target - prev_count) / recent if recent > 0 else now
            return WaitResult(count, max(finish, prev_time) - started, scrapes, True)
        if count != last_count:
            progress_at = now
        if now - progress_at > stall or now - started > timeout:
            return WaitResult(count, now - started, scrapes, False)
        prev_count, prev_time = count, now
        last_count = count
        time.sleep(interval)


def warm_up(consumer: ConsumerProcess, broker: Broker, opts: Options, events: int = 2000) -> None:
    """Publish until the consumer counts: proves it is subscribed before any backlog builds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = consumer.count()
        report = publish(broker, opts, events, procs=1)
        result = wait_count(consumer, before + consumer.expected(report.by_type), 15, stall=5)
        if result.complete:
            return
    raise RuntimeError(f"{consumer.kind} never counted the warm-up events")


@dataclass
class DrainResult:
    events: int
    seconds: float
    rate: float
    cpu_us_per_event: float
    lost: int
    build_seconds: float
    scrape_p50: float
    scrape_p99: float


@dataclass
class DrainStart:
    """Where a drain's timing starts: the consumer's count before its backlog was published,
    and its CPU time and the clocks when it was resumed."""

    base: int
    cpu0: float
    started: float  # time.monotonic()
    wall_started: float  # time.time(), against the consumer's own time of its last event


def resume_timed(consumer: ConsumerProcess, base: int) -> DrainStart:
    """SIGCONT a consumer whose backlog is buffered, noting where its drain's timing starts."""
    cpu0 = consumer.cpu_seconds()
    started, wall_started = time.monotonic(), time.time()
    consumer.resume()
    return DrainStart(base, cpu0, started, wall_started)


def time_drain(
    consumer: ConsumerProcess,
    start: DrainStart,
    report: PublishReport,
    timeout: float,
    poll_interval: float,
) -> DrainResult:
    """Wait until the resumed consumer has counted the backlog `report` published; its rate and
    CPU per event. The consumer is scraped every `poll_interval` s meanwhile, and pays for it."""
    expected = consumer.expected(report.by_type)
    result = wait_count(
        consumer,
        start.base + expected,
        timeout,
        interval=poll_interval,
        started=start.started,
        wall_started=start.wall_started,
    )
    cpu = consumer.cpu_seconds() - start.cpu0
    # in published events: Flower counts task events only
    counted = round((result.counted - start.base) * report.events / max(expected, 1))
    return DrainResult(
        events=report.events,
        seconds=result.seconds,
        rate=min(counted, report.events) / result.seconds if result.seconds else 0.0,
        cpu_us_per_event=cpu / max(counted, 1) * 1e6,
        lost=max(0, report.events - counted),
        build_seconds=report.seconds,
        scrape_p50=percentile(result.scrape_seconds, 50),
        scrape_p99=percentile(result.scrape_seconds, 99),
    )


def drain(
    consumer: ConsumerProcess,
    broker: Broker,
    opts: Options,
    events: int,
    timeout: float,
    poll_interval: float,
) -> DrainResult:
    """SIGSTOP the subscribed consumer, publish a backlog, SIGCONT, time until all counted.
    The consumer is scraped every `poll_interval` s meanwhile, and pays for it."""
    base = consumer.count()
    broker.set_pubsub_limit(REDIS_PUBSUB_UNLIMITED)
    consumer.pause()
    try:
        report = publish_backlog(broker, opts, events)
    finally:
        start = resume_timed(consumer, base)
    result = time_drain(consumer, start, report, timeout, poll_interval)
    broker.set_pubsub_limit(REDIS_PUBSUB_DEFAULT)
    return result


@dataclass
class LiveTrial:
    rate: float
    achieved: float
    ok: bool
    lag_seconds: float


@dataclass
class LiveResult:
    best: float  # highest rate with every event counted within `grace` of the last publish
    publisher_limited: bool
    trials: list[LiveTrial]


def live_rate(
    consumer_ref: Callable[[], ConsumerProcess],
    broker: Broker,
    opts: Options,
    first_rate: float,
    window: float,
    steps: int,
    grace: float = 1.0,
) -> LiveResult:
    """Search for the highest fixed rate the consumer keeps up with, losing nothing: publish
    for `window` s at a rate; pass if every event is counted `grace` s after the publisher
    stops. Redis keeps its default pub/sub limit, so a laggard is cut off as in
    production. `consumer_ref` returns the live consumer (the caller restarts a dead one)."""
    lo, hi, rate = 0.0, 0.0, first_rate
    trials: list[LiveTrial] = []
    limited = False
    short = 0
    for _ in range(steps):
        consumer = consumer_ref()
        base = consumer.count()
        spec = replace(opts.spec, seed=time.monotonic_ns() % 1_000_000, online_at_start=False)
        jobs = split_jobs(broker.url, spec, opts.live_processes, duration=window, rate=rate)
        report = publish_jobs(jobs)
        stopped = time.time()
        target = base + consumer.expected(report.by_type)
        # No scrape until the grace period is over: a scrape costs the exporter tens of ms
        # of CPU, which is measured on its own (the drain scraped 4x/s).
        time.sleep(grace)
        try:
            text, _ = consumer.fetch()
            ok = consumer.count_from(text) >= target
            last_event = consumer.last_event_from(text)
            lag = (last_event - stopped) if ok and last_event else (grace if ok else math.inf)
        except OSError:
            ok, lag = False, math.inf
        trials.append(LiveTrial(rate, report.rate, ok, lag))
        if ok:
            lo = max(lo, min(rate, report.rate))
            # The publisher shares the CPU with the consumer: past some rate it is the limit.
            short += report.rate < 0.95 * rate
            if short >= 2:
                limited = True
                break
        else:
            failed_at = min(rate, report.rate)
            hi = failed_at if not hi else min(hi, failed_at)
            # let any lagging backlog clear before the next trial
            with contextlib.suppress(OSError):
                wait_count(consumer_ref(), target, timeout=30, stall=5)
        rate = (lo + hi) / 2 if hi else rate * 1.5
        if hi and hi - lo < 0.05 * hi:
            break
    return LiveResult(lo, limited, trials)


@dataclass
class MemoryResult:
    samples: list[tuple[int, int]]  # (unique tasks counted so far, RSS bytes)
    seconds: float


def memory(
    consumer: ConsumerProcess,
    broker: Broker,
    opts: Options,
    tasks: int,
    points: int,
    timeout: float,
    max_chunk_events: int,
) -> MemoryResult:
    """Feed `tasks` unique tasks in chunks of at most `max_chunk_events` (each a paused
    backlog, so no event is lost to a TTL or the pub/sub limit), reading VmRSS at `points`
    evenly spaced task counts."""
    started = time.monotonic()
    samples = [(0, consumer.rss_bytes())]
    done = 0
    events_per_task = 4.6  # sent, received, started, finished; plus retries
    chunk_events = min(max_chunk_events, int(tasks / points * events_per_task))
    next_sample = tasks / points
    broker.set_pubsub_limit(REDIS_PUBSUB_UNLIMITED)
    try:
        while done < tasks and time.monotonic() - started < timeout:
            base = consumer.count()
            consumer.pause()
            try:
                report = publish(broker, opts, chunk_events)
            finally:
                consumer.resume()
            target = base + consumer.expected(report.by_type)
            wait_count(consumer, target, timeout=timeout, interval=0.5)
            done += report.by_type["task-sent"] - report.by_type["task-retried"]
            if done >= next_sample or done >= tasks:
                samples.append((done, consumer.rss_bytes()))
                next_sample += tasks / points
    finally:
        broker.set_pubsub_limit(REDIS_PUBSUB_DEFAULT)
    return MemoryResult(samples, time.monotonic() - started)


@dataclass
class LatencyResult:
    p50: float
    p99: float
    samples: int


def event_latency(consumer: ConsumerProcess, broker: Broker, rounds: int) -> LatencyResult:
    """Publish one task-sent event (every consumer counts those), poll the consumer until its
    count moves: publish-to-visible, including one scrape."""
    from celery.events.event import get_exchange
    from kombu.connection import Connection
    from kombu.messaging import Producer

    stream = EventStream(replace(StreamSpec(), online_at_start=False))
    beats: Iterator[Message] = (m for m in stream.messages() if m.routing_key == "task.sent")
    latencies: list[float] = []
    with Connection(broker.url) as conn:
        exchange = get_exchange(conn)
        # kombu's Redis channel routes by the exchange type it has seen declared: undeclared,
        # a fanout exchange is taken for a direct one and the message goes nowhere.
        exchange(conn.default_channel).declare()
        producer = Producer(conn.default_channel, exchange=exchange, auto_declare=False)
        for _ in range(rounds):
            base = consumer.count()
            message = next(beats)
            sent = time.perf_counter()
            publish_message(producer, exchange.name, message)
            deadline = sent + 5.0
            while consumer.count() <= base and time.perf_counter() < deadline:
                time.sleep(0.002)
            latencies.append(time.perf_counter() - sent)
            time.sleep(0.05)
    return LatencyResult(percentile(latencies, 50), percentile(latencies, 99), len(latencies))


@dataclass
class ExpositionResult:
    samples: int
    bytes: int
    p50: float
    p99: float


def exposition(
    consumer: ConsumerProcess, broker: Broker, opts: Options, names: int, workers: int, scrapes: int
) -> ExpositionResult:
    """Fill an exporter with `names` x `workers` label sets, then time full scrapes."""
    spec = replace(
        opts.spec,
        task_names=tuple(f"bench.expo.t{i:04d}" for i in range(names)),
        workers=tuple(f"celery@expo-host-{i:04d}" for i in range(workers)),
        heartbeat_interval=3600.0,
    )
    events = names * workers * 4 * 5  # ~4 tasks per (name, worker): nearly every pair is seen
    base = consumer.count()
    report = publish_jobs(split_jobs(broker.url, spec, opts.processes, events=events))
    wait_count(consumer, base + consumer.expected(report.by_type), timeout=300, interval=1.0)
    timings: list[float] = []
    text = ""
    for _ in range(scrapes):
        text, took = consumer.fetch(timeout=120)
        timings.append(took)
    return ExpositionResult(
        count_samples(text), len(text.encode()), percentile(timings, 50), percentile(timings, 99)
    )
